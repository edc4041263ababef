"""The embedded test harness: the dcorch service with simulated clouds, in one trio process.

``open_dcorch`` starts the simulated System Controller and subclouds (``dcorch.sim``), then the
service exactly as production wires it (:func:`dcorch.service.open_service`) with the simulator
as its peers, registers the simulated subclouds, and yields a :class:`Dcorch` handle with every
URL, an admin token, the simulator (subcloud control, fault injection) and a helper that waits
until the subclouds converge. It is what the tests, the bench and ``dcorch serve`` with
``sim.enabled`` run::

    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        await dc.client.post(dc.identity_url + "/v3/users", json=..., headers=dc.auth)
        await dc.wait_converged(timeout=30)
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial

import httpx

from actors import ActorSystem
from dcorch import constants
from dcorch.db.database import NO_SEAMS, Database, DatabaseSeams
from dcorch.db.errors import SubcloudAlreadyExists
from dcorch.db.schema import utcnow
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.metrics import Metrics
from dcorch.remote.endpoints import MasterEndpoints
from dcorch.remote.http import Credentials, open_http_client
from dcorch.service import Service, open_service
from dcorch.settings import Settings
from dcorch.sim import SimCloud, open_sim_cloud
from dcorch.sim.endpoints import SimResolver
from dcorch.sync.env import Driver
from dcorch.sync.manager import SyncManager

logger = logging.getLogger(__name__)

SOFTWARE_VERSION = "24.09"
"""What simulated subclouds are registered with."""
CALLER_CONNECTIONS = 500
"""Connections of the handle's own client (the caller of the proxies)."""


@dataclass
class Dcorch:
    """Handle to a running system (yielded by :func:`open_dcorch`)."""

    service: Service
    client: httpx.AsyncClient
    """A client for the caller (tests, bench), with its own pool."""
    sim: SimCloud | None
    token: str = ""
    """An admin token of the master keystone, valid for the proxies and the API."""

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def db(self) -> Database:
        return self.service.db

    @property
    def system(self) -> ActorSystem:
        return self.service.system

    @property
    def sync_manager(self) -> SyncManager | None:
        return self.service.sync_manager

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    @property
    def master(self) -> MasterEndpoints:
        return self.service.master

    @property
    def urls(self) -> dict[str, str]:
        return self.service.urls

    @property
    def identity_url(self) -> str:
        return self.service.identity_url

    @property
    def platform_url(self) -> str:
        return self.service.platform_url

    @property
    def api_url(self) -> str:
        return self.service.api_url

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
        await self.register(regions, manage=manage)
        return regions

    async def register(self, regions: Sequence[str], *, manage: bool = True) -> None:
        """Add subclouds to dcorch (as the v1 API would) and, with ``manage``, bring them
        managed and online so their initial sync starts."""
        manager = self.service.sync_manager
        for region in regions:
            with suppress(SubcloudAlreadyExists):
                await self.db.add_subcloud(
                    region, software_version=SOFTWARE_VERSION, management_ip="127.0.0.1"
                )
            if manage:
                await self.db.update_subcloud_states(
                    region,
                    management_state=constants.MANAGEMENT_MANAGED,
                    availability_status=constants.AVAILABILITY_ONLINE,
                )
            if manager is not None:
                await manager.subcloud_changed(region)

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
    ephemeral_ports: bool = False,
    upgrade_db: bool = True,
    subclouds: int | None = None,
    engine: bool = True,
    presynced: bool = False,
    register: bool = True,
    driver: Driver | None = None,
    rng: random.Random | None = None,
    seams: DatabaseSeams = NO_SEAMS,
) -> AsyncIterator[Dcorch]:
    """Run the whole system until the block exits.

    Args:
        settings: the process settings (defaults from ``config/dcorch.toml`` semantics).
        ephemeral_ports: bind every listener to port 0 (tests and bench) instead of the
            configured ports, with a private SQLite file unless ``database.url`` is set.
        upgrade_db: bring the schema to the code's head first (``dcorch db upgrade``).
        subclouds: simulated subclouds to create (default ``sim.subclouds``).
        engine: run the sync engine; without it the system records work but applies none.
        presynced: register the simulated subclouds as already initially synced and audited
            (their fernet keys set to the master's) instead of managing them one by one, so a
            scale test with thousands of subclouds starts in seconds rather than minutes.
        register: add the simulated subclouds to dcorch and manage them (otherwise the test
            does it, e.g. with :meth:`Dcorch.register`).
        driver: applies one request in the sync actors (fault tests wrap the real one).
        rng: the engine's jitter source (seed it for reproducible tests).
        seams: database fault injection (see :class:`dcorch.db.DatabaseSeams`).
    """
    settings = settings or Settings()
    async with AsyncExitStack() as stack:
        sim: SimCloud | None = None
        master: MasterEndpoints | None = None
        resolver: SimResolver | None = None
        if settings.sim.enabled:
            count = settings.sim.subclouds if subclouds is None else subclouds
            sim = await stack.enter_async_context(
                open_sim_cloud(settings.sim, settings.master, subclouds=count)
            )
            master, resolver = sim.endpoints.master(), SimResolver(sim.endpoints)
        seeded = sim is not None and engine and presynced and register
        service = await stack.enter_async_context(
            open_service(
                settings,
                master=master,
                subclouds=resolver,
                ephemeral_ports=ephemeral_ports,
                upgrade_db=upgrade_db,
                engine=engine,
                driver=driver,
                rng=rng,
                prepare=partial(_presync, sim) if seeded and sim is not None else None,
                seams=seams,
            )
        )
        client = await stack.enter_async_context(
            open_http_client(settings.tls, max_connections=CALLER_CONNECTIONS, timeout=60.0)
        )
        handle = Dcorch(service=service, client=client, sim=sim)
        credentials = Credentials(
            settings.master.username, settings.master.password, settings.master.project_name
        )
        handle.token = await _admin_token(client, credentials, service.master)
        if sim is not None and engine and register and not presynced:
            await handle.register(list(sim.regions))
        yield handle


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
