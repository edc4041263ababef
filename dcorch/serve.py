"""``dcorch serve``: run the service on the configured ports until SIGINT or SIGTERM.

With ``sim.enabled`` (the default of ``./just run``) the System Controller and subclouds are
simulated in-process (:mod:`dcorch.harness`), else real ones from ``[master]`` are used.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from dcorch.db.errors import SchemaOutOfDate
from dcorch.service import Service, open_service
from dcorch.settings import Settings

logger = logging.getLogger(__name__)


def banner(service: Service, *, token: str = "", sim_lines: list[str] | None = None) -> str:
    """What the operator's console shows once everything listens."""
    lines = ["dcorch is running:"]
    for name, url in sorted(service.urls.items()):
        label = "dcorch v1 API" if name == "api" else f"{name} proxy"
        lines.append(f"  {label:<16} {url}")
    lines += sim_lines or []
    if token:
        lines += [
            "",
            "Create a user at the (simulated) System Controller through the identity proxy:",
            f"  TOKEN={token}",
            f'  curl -s -X POST {service.identity_url}/v3/users -H "X-Auth-Token: $TOKEN" \\',
            "       -H 'Content-Type: application/json' \\",
            '       -d \'{"user": {"name": "alice", "password": "s3cret-pw", '
            '"domain_id": "default"}}\'',
            "Then see every subcloud's sync status:",
            f'  curl -s {service.api_url}/v1.0/admin/subclouds -H "X-Auth-Token: $TOKEN"',
        ]
    else:
        # Never a real master's token on the console or in a log: say how to get one.
        lines += [
            "",
            "Get a token from the System Controller's keystone, then use the proxies and the API:",
            f"  openstack --os-auth-url {service.master.keystone} --os-identity-api-version 3 "
            "token issue",
            f'  curl -s {service.api_url}/v1.0/admin/subclouds -H "X-Auth-Token: $TOKEN"',
        ]
    lines += ["", "Ctrl-C stops."]
    return "\n".join(lines)


@asynccontextmanager
async def _running(settings: Settings, upgrade_db: bool) -> AsyncIterator[str]:
    if not settings.sim.enabled:
        async with open_service(settings, upgrade_db=upgrade_db) as service:
            yield banner(service)
        return
    from dcorch.harness import open_dcorch

    async with open_dcorch(settings, upgrade_db=upgrade_db) as dc:
        assert dc.sim is not None
        sim_lines = [
            f"  simulated clouds {dc.sim.base_url} ({len(dc.sim.regions)} subclouds)",
            f"  sim inspection   {dc.sim.endpoints.control}/subclouds/<region>/state",
        ]
        # The simulator's admin token is a test credential, fine to show on the console.
        yield banner(dc, token=dc.token, sim_lines=sim_lines)


async def _serve(settings: Settings, upgrade_db: bool) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with _running(settings, upgrade_db) as text:
            print(text, flush=True)  # noqa: T201 - the operator's console
            async for signum in signals:
                logger.info("service.stopping signal=%s", signal.Signals(signum).name)
                break


def serve_forever(settings: Settings, *, upgrade_db: bool = False) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit status."""
    try:
        trio.run(_serve, settings, upgrade_db)
    except SchemaOutOfDate as exc:
        print(f"dcorch: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except (OSError, ValueError) as exc:
        print(f"dcorch: cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
