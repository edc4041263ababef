"""Fixtures: the simulator, a SQLite database, and the service (engine included) wired to both."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dcorch import constants as c
from dcorch.db import Database, migrate, open_database
from dcorch.db.database import NO_SEAMS, DatabaseSeams
from dcorch.db.rows import PendingRequest
from dcorch.harness import register_subclouds
from dcorch.remote.clients import CachedMasterClient, CloudClient, MasterReads
from dcorch.remote.http import Credentials, HttpSession
from dcorch.service import Service, open_service
from dcorch.settings import (
    ActorSettings,
    DatabaseSettings,
    EngineSettings,
    MasterSettings,
    Settings,
)
from dcorch.sim import SimCloud, open_sim_cloud
from dcorch.sim.endpoints import SimResolver
from dcorch.sync.drivers import DriverContext, apply_request
from dcorch.sync.env import Driver
from dcorch.sync.manager import SyncManager
from dcorch.sync.noop import NoOp
from dcorch.work import WorkOrder

FAST_DB = DatabaseSettings(retry_backoff=0.01, retry_backoff_max=0.2, sqlite_busy_timeout_ms=2000)
ENGINE = EngineSettings(
    request_retry_backoff=1.0,
    request_retry_backoff_max=4.0,
    subcloud_http_timeout=10.0,
    offline_retry_interval=30.0,
    safety_sweep_interval=600.0,
)
ACTORS = ActorSettings(restart_backoff=0.1, restart_backoff_max=1.0)


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], *, poll: float = 0.02
) -> None:
    """Poll ``predicate`` (sync or async) until true; the caller bounds it with ``fail_after``."""
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await trio.sleep(poll)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engine-template") / "dcorch.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh database at the code's head (a copy of a migrated template)."""
    path = tmp_path / "dcorch.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with open_database(db_url, database=FAST_DB) as database:
        yield database


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[SimCloud]:
    """Three subclouds; ``parametrize("sim", [{...}], indirect=True)`` passes options."""
    options: dict[str, Any] = getattr(request, "param", {})
    async with open_sim_cloud(subclouds=options.pop("subclouds", 3), port=0, **options) as cloud:
        yield cloud


@pytest.fixture
async def http(sim: SimCloud) -> AsyncIterator[HttpSession]:
    creds = Credentials(sim.admin.username, sim.admin.password, sim.admin.project_name)
    async with httpx.AsyncClient(timeout=None) as client:
        yield HttpSession(client, creds, ENGINE.subcloud_http_timeout)


@dataclass
class Engine:
    """Everything an integration test drives."""

    sim: SimCloud
    db: Database
    """The service's database (the ``db`` fixture is another handle on the same file)."""
    http: HttpSession
    manager: SyncManager
    service: Service

    def manager_restarts(self) -> int:
        """How often the service's supervisor restarted the sync manager."""
        [node] = [n for n in self.service.system.snapshot().children if n.name == "sync"]
        return node.restarts

    async def manage(self, *regions: str) -> None:
        """Add subclouds to dcorch and bring them managed + online (initial sync follows)."""
        await register_subclouds(self.service, regions)

    async def wait_enabled(self, *regions: str) -> None:
        """Initial sync done, enable-time audits done, and every pair reported in-sync."""
        for region in regions:
            for ept in c.SYNC_ENDPOINT_TYPES:
                while self.sim.latest_status(region, ept) != "in-sync":  # noqa: ASYNC110
                    await trio.sleep(0.05)
            while (await self.db.get_subcloud(region)).initial_sync_state != (  # noqa: ASYNC110
                c.INITIAL_SYNC_COMPLETED
            ):
                await trio.sleep(0.05)

    async def settle(self, region: str) -> None:
        """Wait until the region's actor has done everything it was woken for before this call.

        The ``ask`` queues behind any pending wake-up and is answered when its own pass is over,
        so every pass, audit and status report triggered earlier has finished. This is how a
        test proves a window passed without sleeping through it.
        """
        await self.manager.sync_now(region)

    async def wait_idle(self) -> None:
        """No live orch_request left (the database lags the subclouds by one write)."""
        while await self.db.count_requests_by_state():  # noqa: ASYNC110
            await trio.sleep(0.05)

    async def master_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.sim.endpoints.master_keystone}/{path}"
        token = self.sim.admin_token()
        async with httpx.AsyncClient() as client:
            response = await client.request(method, url, headers={"X-Auth-Token": token}, **kwargs)
        response.raise_for_status()
        return response


EngineFactory = Callable[..., Awaitable[Engine]]


@pytest.fixture
def start_engine(nursery: trio.Nursery, sim: SimCloud, db_url: str) -> EngineFactory:
    """``await start_engine(settings=..., driver=..., seams=...)`` -> a running :class:`Engine`.

    The service is built by :func:`dcorch.service.open_service`, as in production, with the
    simulator as its peers and the ``db`` fixture's database file.
    """

    async def start(
        settings: EngineSettings = ENGINE,
        driver: Driver | None = None,
        seams: DatabaseSeams = NO_SEAMS,
        actor_settings: ActorSettings = ACTORS,
    ) -> Engine:
        full = Settings(
            database=dataclasses.replace(FAST_DB, url=db_url),
            engine=settings,
            actors=actor_settings,
            master=MasterSettings(
                username=sim.admin.username,
                password=sim.admin.password,
                project_name=sim.admin.project_name,
            ),
        )
        service: Service = await nursery.start(_serve, full, sim, driver, seams)
        assert service.sync_manager is not None
        return Engine(sim, service.db, service.http, service.sync_manager, service)

    return start


async def _serve(
    settings: Settings,
    sim: SimCloud,
    driver: Driver | None,
    seams: DatabaseSeams,
    *,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_service(
        settings,
        master=sim.endpoints.master(),
        subclouds=SimResolver(sim.endpoints),
        ephemeral_ports=True,
        upgrade_db=False,
        driver=driver,
        rng=random.Random(7),
        seams=seams,
    ) as service:
        task_status.started(service)
        await trio.sleep_forever()


PLATFORM_KINDS = frozenset({c.RESOURCE_CERTIFICATES, c.RESOURCE_IUSER, c.RESOURCE_FERNET_REPO})


@dataclass
class DriverRig:
    """One subcloud known to dcorch's database, and the real drivers pointed at it over HTTP."""

    sim: SimCloud
    db: Database
    http: HttpSession
    region: str
    master: CachedMasterClient

    def fresh_master(self) -> CachedMasterClient:
        """The master client with nothing cached (the test changed the master directly)."""
        return dataclasses.replace(self.master, reads=MasterReads())

    @property
    def cloud(self) -> Any:
        """The subcloud's simulated state (``.identity``, ``.platform``, ``.operations``)."""
        return self.sim.subcloud(self.region)

    async def context(self) -> DriverContext:
        row = await self.db.get_subcloud(self.region)
        remote = CloudClient.for_subcloud(
            self.http, SimResolver(self.sim.endpoints).endpoints_for(row)
        )
        return DriverContext(
            self.db, row, remote, self.master, keyring_password=self.sim.admin.password
        )

    async def request(
        self, resource_type: str, source_id: str, op: str, info: Any = None
    ) -> PendingRequest:
        """Queue one request for this subcloud (through the real enqueue) and return it."""
        ept = (
            c.ENDPOINT_TYPE_PLATFORM
            if resource_type in PLATFORM_KINDS
            else c.ENDPOINT_TYPE_IDENTITY
        )
        text = info if isinstance(info, str) else json.dumps({} if info is None else info)
        order = WorkOrder(ept, resource_type, source_id, op, text, subcloud=self.region)
        [result] = await self.db.enqueue_work([order])
        pending = await self.db.pending_requests(self.region, ept)
        return next(r for r in pending if r.orch_job_id == result.orch_job_id)

    async def apply(
        self, resource_type: str, source_id: str, op: str, info: Any = None
    ) -> PendingRequest:
        """Queue a request and apply it with the real driver (exceptions propagate)."""
        request = await self.request(resource_type, source_id, op, info)
        await apply_request(await self.context(), request)
        return request

    async def applied(
        self, resource_type: str, source_id: str, op: str, info: Any = None
    ) -> NoOp | None:
        """Like :meth:`apply`, returning the driver's answer (a :class:`NoOp` or None)."""
        request = await self.request(resource_type, source_id, op, info)
        return await apply_request(await self.context(), request)

    async def mapped(self, resource_type: str, master_id: str) -> str | None:
        row = await self.db.get_subcloud_resource(self.region, resource_type, master_id)
        return None if row is None else row.subcloud_resource_id

    def ops(self, service: str | None = None) -> list[str]:
        """The subcloud's applied-operations log (``op`` names), oldest first."""
        return [o["op"] for o in self.cloud.operations if service in (None, o["service"])]

    async def master_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.sim.endpoints.master_keystone}/{path}"
        async with httpx.AsyncClient() as client:
            response = await client.request(
                method, url, headers={"X-Auth-Token": self.sim.admin_token()}, **kwargs
            )
        response.raise_for_status()
        return response


@pytest.fixture
async def rig(sim: SimCloud, db: Database, http: HttpSession) -> DriverRig:
    """``sim.regions[0]`` added to dcorch, managed, online and initial-synced."""
    region = sim.regions[0]
    await db.add_subcloud(region, software_version="24.09", management_ip="10.0.0.1")
    await db.update_subcloud_states(
        region, management_state=c.MANAGEMENT_MANAGED, availability_status=c.AVAILABILITY_ONLINE
    )
    await db.set_initial_sync_state(region, c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_COMPLETED)
    master = CachedMasterClient.for_master(http, sim.endpoints.master())
    return DriverRig(sim, db, http, region, master)
