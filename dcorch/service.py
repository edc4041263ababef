"""``dcorch serve``: run the harness on the configured ports until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from dcorch.db.errors import SchemaOutOfDate
from dcorch.settings import Settings

logger = logging.getLogger(__name__)


def _banner(dc: object) -> str:
    from dcorch.harness import Dcorch

    assert isinstance(dc, Dcorch)
    lines = ["dcorch is running:"]
    for name, url in sorted(dc.urls.items()):
        label = "dcorch v1 API" if name == "api" else f"{name} proxy"
        lines.append(f"  {label:<16} {url}")
    if dc.sim is not None:
        lines.append(f"  simulated clouds {dc.sim.base_url} ({len(dc.sim.regions)} subclouds)")
        lines.append(f"  sim inspection   {dc.sim.endpoints.control}/subclouds/<region>/state")
    lines += [
        "",
        "Create a user at the System Controller through the identity proxy:",
        f"  TOKEN={dc.token}",
        f'  curl -s -X POST {dc.identity_url}/v3/users -H "X-Auth-Token: $TOKEN" \\',
        "       -H 'Content-Type: application/json' \\",
        '       -d \'{"user": {"name": "alice", "password": "s3cret-pw","domain_id": "default"}}\'',
        "Then see every subcloud's sync status:",
        f'  curl -s {dc.api_url}/v1.0/admin/subclouds -H "X-Auth-Token: $TOKEN"',
        "",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


async def _serve(settings: Settings, upgrade_db: bool) -> None:
    from dcorch.harness import open_dcorch

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_dcorch(settings, upgrade_db=upgrade_db) as dc:
            print(_banner(dc), flush=True)  # noqa: T201 - the operator's console
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
    except OSError as exc:
        print(f"dcorch: cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
