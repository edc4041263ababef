"""The embedded test harness: the dcorch service with simulated clouds, in one trio process.

``open_dcorch`` starts the simulated clouds (``dcorch.sim``), then the service wired as in
production (:func:`dcorch.service.open_service`) with them as peers, registers the subclouds and
yields a :class:`Dcorch` handle: URLs, an admin token, the simulator (subcloud control, fault
injection), a convergence wait. Tests, the bench and ``dcorch serve`` (``sim.enabled``) run it::

    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        await dc.client.post(dc.identity_url + "/v3/users", json=..., headers=dc.auth)
        await dc.wait_converged(timeout=30)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Unpack

import httpx

from dcorch import constants
from dcorch.db.database import Database
from dcorch.db.errors import SubcloudAlreadyExists
from dcorch.db.schema import utcnow
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.remote.endpoints import MasterEndpoints, check_master_settings
from dcorch.remote.http import Credentials, open_http_client
from dcorch.service import Service, ServiceOptions, open_service
from dcorch.settings import Settings
from dcorch.sim import SimCloud, open_sim_cloud
from dcorch.sim.endpoints import SimResolver
from dcorch.sim.fernet import SimFernetRotator

logger = logging.getLogger(__name__)

SOFTWARE_VERSION = "24.09"
"""What simulated subclouds are registered with."""
CALLER_CONNECTIONS = 500
"""Connections of the handle's own client (the caller of the proxies)."""


@dataclass
class Dcorch(Service):
    """The :func:`open_dcorch` handle: the service's plus simulator, client and admin token."""

    client: httpx.AsyncClient = field(kw_only=True)
    """A client for the caller (tests, bench), with its own pool."""
    sim: SimCloud | None = field(kw_only=True)
    token: str = field(default="", kw_only=True)
    """An admin token of the master keystone, valid for the proxies and the API."""

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate a request as the master admin."""
        return {"X-Auth-Token": self.token}

    def _sim(self) -> SimCloud:
        if self.sim is None:
            raise RuntimeError("this needs the simulated clouds (sim.enabled)")
        return self.sim

    async def add_subclouds(self, count: int, *, manage: bool = True) -> list[str]:
        """Create ``count`` more simulated subclouds and register (and manage) them."""
        regions = self._sim().add_subclouds(count)
        await register_subclouds(self, regions, manage=manage)
        return regions

    async def wait_converged(
        self,
        regions: list[str] | None = None,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - mirrors SimCloud.wait_converged
    ) -> None:
        """Wait until every (listed) simulated subcloud matches the master."""
        await self._sim().wait_converged(regions, timeout=timeout)


@asynccontextmanager
async def open_dcorch(
    settings: Settings | None = None,
    *,
    subclouds: int | None = None,
    presynced: bool = False,
    register: bool = True,
    **options: Unpack[ServiceOptions],
) -> AsyncIterator[Dcorch]:
    """Run the whole system until the block exits.

    Args:
        settings: the process settings (defaults from ``config/dcorch.toml`` semantics).
        subclouds: simulated subclouds to create (default ``sim.subclouds``).
        presynced: register the subclouds as already synced and audited (fernet keys set to
            the master's), not managed one by one: thousands start in seconds, not minutes.
        register: register and manage the subclouds (else the test calls register_subclouds).
        options: how the service runs (:func:`dcorch.service.open_service`): tests and the
            bench pass ``ephemeral_ports=True``; ``engine=False`` records work without applying
            it; ``driver``, ``rng`` and ``seams`` inject faults and determinism; the simulated
            master's key rotation is the ``fernet_rotator`` unless one is given.
    """
    settings = settings or Settings()
    check_master_settings(settings)  # a real master URL beside the simulator stops start-up
    if subclouds is not None and not settings.sim.enabled:
        raise ValueError("subclouds= creates simulated subclouds, but sim.enabled is false")
    async with AsyncExitStack() as stack:
        sim: SimCloud | None = None
        master: MasterEndpoints | None = None
        resolver: SimResolver | None = None
        if settings.sim.enabled and not settings.master.ca_cert_dir:
            # The simulated master writes its CA files there and the audit reads them back.
            ca_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dcorch-ca-"))
            settings = settings.replace(master={"ca_cert_dir": ca_dir})
        if settings.sim.enabled:
            count = settings.sim.subclouds if subclouds is None else subclouds
            sim = await stack.enter_async_context(
                open_sim_cloud(settings.sim, settings.master, subclouds=count)
            )
            master, resolver = sim.endpoints.master(), SimResolver(sim.endpoints)
            # The simulated master rotates its own keys in place of the rotation command.
            options.setdefault("fernet_rotator", SimFernetRotator(sim.master))
        engine = options.get("engine", True)
        seeded = sim is not None and engine and presynced and register
        service = await stack.enter_async_context(
            open_service(
                settings,
                master=master,
                subclouds=resolver,
                prepare=partial(_presync, sim) if seeded and sim is not None else None,
                **options,
            )
        )
        client = await stack.enter_async_context(
            open_http_client(settings.tls, max_connections=CALLER_CONNECTIONS, timeout=60.0)
        )
        parts = {f.name: getattr(service, f.name) for f in fields(service)}
        handle = Dcorch(**parts, client=client, sim=sim)
        credentials = Credentials(
            settings.master.username, settings.master.password, settings.master.project_name
        )
        handle.token = await _admin_token(client, credentials, service.master)
        if sim is not None and engine and register and not presynced:
            await register_subclouds(handle, list(sim.regions))
        yield handle


async def register_subclouds(
    service: Service, regions: Sequence[str], *, manage: bool = True
) -> None:
    """Add subclouds as the v1 API would and, with ``manage``, bring them managed and online so
    their initial sync starts (an already registered subcloud is just managed again)."""
    for region in regions:
        with suppress(SubcloudAlreadyExists):
            await service.db.add_subcloud(
                region,
                software_version=SOFTWARE_VERSION,
                management_ip="127.0.0.1",
                endpoint_types=service.master.sync_endpoint_types,
            )
        if manage:
            await service.db.update_subcloud_states(
                region,
                management_state=constants.MANAGEMENT_MANAGED,
                availability_status=constants.AVAILABILITY_ONLINE,
            )
        if service.sync_manager is not None:
            await service.sync_manager.subcloud_changed(region)


async def _presync(sim: SimCloud, db: Database) -> None:
    """Register every simulated subcloud as synced: equal fernet keys, rows in one bulk unit."""
    master_keys = sim.master.platform.fernet_keys
    for region in sim.regions:
        sim.subcloud(region).platform.set_fernet_keys(master_keys)
    await db.run(seed_eligible_subclouds, list(sim.regions), audited_at=utcnow())


async def _admin_token(
    client: httpx.AsyncClient, credentials: Credentials, master: MasterEndpoints
) -> str:
    response = await client.post(f"{master.keystone}/auth/tokens", json=credentials.auth_body())
    response.raise_for_status()
    token: str = response.headers["X-Subject-Token"]
    return token
