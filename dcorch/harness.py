"""The whole dcorch system in one trio process: the embedded harness.

``open_dcorch`` starts, in order, the simulated clouds (when ``sim.enabled``), the database
actor, and a supervised actor system holding the dispatcher, the sync manager, one API proxy
per endpoint type and the dcorch v1 API. It yields a :class:`Dcorch` handle with every URL, an
admin token, the simulator handle (subcloud control and fault injection) and a helper that
waits until all subclouds converge. Leaving the block shuts everything down in reverse order.

It is the fixture of the integration tests, the engine of the bench suite and what
``dcorch serve`` runs, so the three always exercise the same wiring::

    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        await dc.client.post(dc.identity_url + "/v3/users", json=..., headers=dc.auth)
        await dc.wait_converged(timeout=30)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio

from actors import (
    ActorStopped,
    ActorSystem,
    Backoff,
    NodeSnapshot,
    RestartIntensity,
    TaskSpec,
    open_actor_system,
)
from dcorch import constants
from dcorch.api.app import create_api_app
from dcorch.api.serve import serve_api
from dcorch.db import migrate
from dcorch.db.database import Database, open_database
from dcorch.db.errors import SubcloudAlreadyExists
from dcorch.db.schema import utcnow
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.engine.dispatcher import Dispatcher
from dcorch.engine.drivers import apply_request
from dcorch.engine.endpoints import ManagementIpResolver, MasterEndpoints, SimResolver
from dcorch.engine.env import Driver
from dcorch.engine.http import Credentials, HttpSession
from dcorch.engine.sync_manager import SyncManager
from dcorch.metrics import Metrics
from dcorch.proxy.app import create_proxy_app
from dcorch.proxy.auth import KeystoneTokenValidator, TokenCache
from dcorch.proxy.fernet_audit import SysinvFernetKeys
from dcorch.proxy.serve import serve_proxy
from dcorch.settings import Settings
from dcorch.sim import SimCloud, open_sim_cloud

logger = logging.getLogger(__name__)


@dataclass
class MasterUrls:
    """Where the System Controller's real (or simulated) services answer."""

    keystone: str
    """Unversioned keystone root (the identity proxy appends ``/v3/...``)."""
    sysinv: str
    """Unversioned sysinv root (the platform proxy appends ``/v1/...``)."""
    dcdbsync: str
    dcmanager: str
    usm: str = ""


@dataclass
class Dcorch:
    """Handle to a running system (yielded by :func:`open_dcorch`)."""

    settings: Settings
    db: Database
    system: ActorSystem
    dispatcher: Dispatcher
    sync_manager: SyncManager
    metrics: Metrics
    client: httpx.AsyncClient
    master: MasterUrls
    sim: SimCloud | None
    urls: dict[str, str] = field(default_factory=dict)
    """``identity``, ``platform``, ``usm`` (proxies) and ``api`` -> base URL."""
    token: str = ""
    """An admin token of the master keystone, valid for the proxies and the API."""

    @property
    def identity_url(self) -> str:
        return self.urls[constants.ENDPOINT_TYPE_IDENTITY]

    @property
    def platform_url(self) -> str:
        return self.urls[constants.ENDPOINT_TYPE_PLATFORM]

    @property
    def api_url(self) -> str:
        return self.urls["api"]

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate a request as the master admin."""
        return {"X-Auth-Token": self.token}

    async def add_subclouds(self, count: int, *, manage: bool = True) -> list[str]:
        """Create ``count`` more simulated subclouds and register (and manage) them."""
        if self.sim is None:
            raise RuntimeError("add_subclouds needs the simulated clouds (sim.enabled)")
        regions = self.sim.add_subclouds(count)
        await _register(self.db, self.sync_manager, regions, manage=manage)
        return regions

    async def wait_converged(
        self,
        regions: list[str] | None = None,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - mirrors SimCloud.wait_converged
    ) -> None:
        """Wait until every (listed) simulated subcloud matches the master."""
        if self.sim is None:
            raise RuntimeError("wait_converged needs the simulated clouds (sim.enabled)")
        await self.sim.wait_converged(regions, timeout=timeout)


async def _register(
    db: Database, manager: SyncManager, regions: list[str], *, manage: bool
) -> None:
    for region in regions:
        with suppress(SubcloudAlreadyExists):
            await db.add_subcloud(region, software_version="24.09", management_ip="127.0.0.1")
        if manage:
            await db.update_subcloud_states(
                region,
                management_state=constants.MANAGEMENT_MANAGED,
                availability_status=constants.AVAILABILITY_ONLINE,
            )
        await manager.subcloud_changed(region)


def _walk(node: NodeSnapshot) -> Iterator[NodeSnapshot]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _add_runtime_gauges(
    metrics: Metrics,
    dispatcher: Dispatcher,
    db: Database,
    system: ActorSystem,
    manager: SyncManager | None,
) -> None:
    """Mailbox depths and restart counts, read from the live objects at scrape time."""

    def trees() -> list[NodeSnapshot]:
        found = [system.snapshot()]
        if manager is not None:
            with suppress(ActorStopped):  # the sync manager is between restarts
                found.append(manager.snapshot())
        return found

    def depths() -> Iterator[tuple[dict[str, str], float]]:
        yield {"mailbox": "dispatcher"}, float(dispatcher.statistics().current_buffer_used)
        yield {"mailbox": "database"}, float(db.statistics().mailbox_used)
        sync_depth = sum(node.mailbox_depth or 0 for tree in trees()[1:] for node in _walk(tree))
        yield {"mailbox": "sync_actors"}, float(sync_depth)

    def restarts() -> Iterator[tuple[dict[str, str], float]]:
        for tree in trees():
            yield {"tree": tree.name}, float(sum(node.restarts for node in _walk(tree)))

    metrics.add_gauge("dcorch_mailbox_depth", "messages waiting in bounded mailboxes", depths)
    metrics.add_gauge("dcorch_actor_restarts", "restarts in each supervision tree", restarts)


def _master_urls(settings: Settings, sim: SimCloud | None) -> MasterUrls:
    if sim is not None:
        base = sim.base_url.rstrip("/")
        return MasterUrls(
            keystone=f"{base}/master/keystone",
            sysinv=f"{base}/master/sysinv",
            dcdbsync=sim.endpoints.master_dcdbsync,
            dcmanager=sim.endpoints.master_dcmanager,
        )
    master = settings.master
    missing = [
        name
        for name in ("keystone_url", "sysinv_url", "dcmanager_url")
        if not getattr(master, name)
    ]
    if missing:
        raise ValueError(f"sim.enabled is false, so master.{missing[0]} must be set")
    return MasterUrls(
        keystone=master.keystone_url,
        sysinv=master.sysinv_url,
        dcdbsync=master.keystone_url.rsplit(":", 1)[0] + ":8219/v1.0",
        dcmanager=master.dcmanager_url,
        usm=master.usm_url,
    )


async def _admin_token(client: httpx.AsyncClient, credentials: Credentials, keystone: str) -> str:
    response = await client.post(f"{keystone}/v3/auth/tokens", json=credentials.auth_body())
    response.raise_for_status()
    return response.headers["X-Subject-Token"]


@asynccontextmanager
async def open_dcorch(
    settings: Settings | None = None,
    *,
    ephemeral_ports: bool = False,
    upgrade_db: bool = True,
    subclouds: int | None = None,
    engine: bool = True,
    presynced: bool = False,
    driver: Driver | None = None,
) -> AsyncIterator[Dcorch]:
    """Run the whole system until the block exits.

    Args:
        settings: the process settings (defaults from ``config/dcorch.toml`` semantics).
        ephemeral_ports: bind every listener to port 0 (tests and bench) instead of the
            configured ports.
        upgrade_db: bring the schema to the code's head first (``dcorch db upgrade``);
            without it a database that is behind stops start-up.
        subclouds: simulated subclouds to create and manage (default ``sim.subclouds``).
        engine: run the sync engine; without it the system records work but applies none
            (proxy and throughput tests that must measure the write path alone).
        presynced: register the simulated subclouds as already initially synced and audited
            (their fernet keys set to the master's) instead of managing them one by one, so a
            scale test with thousands of subclouds starts in seconds rather than minutes.
        driver: applies one request in the sync actors (default the real drivers); tests wrap
            :func:`dcorch.engine.drivers.apply_request` to inject faults.
    """
    settings = settings or Settings()
    async with AsyncExitStack() as stack:
        if not settings.database.url and settings.service.data_dir == "data" and ephemeral_ports:
            # Tests and bench runs get a private database unless they chose one.
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dcorch-"))
            settings = settings.replace(service={"data_dir": tmp})
        await trio.Path(settings.service.data_dir).mkdir(parents=True, exist_ok=True)
        url = settings.database_url
        if upgrade_db:
            await migrate.upgrade_async(url)
        sim: SimCloud | None = None
        if settings.sim.enabled:
            count = settings.sim.subclouds if subclouds is None else subclouds
            sim = await stack.enter_async_context(
                open_sim_cloud(settings.sim, settings.master, subclouds=count)
            )
        master = _master_urls(settings, sim)
        # Separate pools: a caller of the proxies (tests, bench, the handle's user) holding every
        # connection of a shared pool would leave the proxies none to reach the master with.
        client = await stack.enter_async_context(
            httpx.AsyncClient(limits=httpx.Limits(max_connections=500), timeout=60.0)
        )
        proxy_client = await stack.enter_async_context(
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
                timeout=settings.proxy.forward_timeout,
            )
        )
        engine_client = await stack.enter_async_context(
            httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=max(10, settings.engine.sync_concurrency),
                    max_keepalive_connections=max(10, settings.engine.sync_concurrency),
                ),
                timeout=settings.engine.subcloud_http_timeout,
            )
        )
        db = await stack.enter_async_context(open_database(settings))
        metrics = Metrics()
        dispatcher = Dispatcher(db, settings.dispatcher, metrics=metrics)
        credentials = Credentials(
            username=settings.master.username,
            password=settings.master.password,
            project_name=settings.master.project_name,
        )
        session = HttpSession(
            engine_client,
            credentials,
            settings.engine.subcloud_http_timeout,
        )
        if sim is not None:
            resolver: Any = SimResolver(sim.endpoints)
            master_endpoints = MasterEndpoints.for_sim(sim.endpoints)
        else:
            resolver = ManagementIpResolver()
            master_endpoints = MasterEndpoints.from_settings(
                settings.master, dcdbsync_url=master.dcdbsync
            )
        manager = SyncManager(
            db,
            settings.engine,
            actor_settings=settings.actors,
            http=session,
            resolver=resolver,
            master=master_endpoints,
            sink=dispatcher.submit,
            driver=driver or apply_request,
        )
        if engine:
            dispatcher.set_commit_listener(manager.on_commit)
        validator = TokenCache(
            KeystoneTokenValidator(master.keystone, proxy_client),
            ttl=settings.proxy.token_cache_ttl,
        )

        async def token_check(token: str) -> bool:
            return await validator.validate(token) is not None

        upstreams = {
            constants.ENDPOINT_TYPE_IDENTITY: (master.keystone, settings.proxy.identity_port),
            constants.ENDPOINT_TYPE_PLATFORM: (master.sysinv, settings.proxy.platform_port),
        }
        if master.usm:
            upstreams[constants.ENDPOINT_TYPE_USM] = (master.usm, settings.proxy.usm_port)
        fernet_keys = SysinvFernetKeys(master.sysinv, proxy_client)
        children: list[Any] = [TaskSpec(name="dispatcher", fn=dispatcher.run)]
        if engine:
            children.append(TaskSpec(name="sync", fn=manager.run))
        for endpoint_type, (upstream, port) in upstreams.items():
            app = create_proxy_app(
                endpoint_type,
                upstream_url=upstream,
                work_sink=dispatcher,
                token_cache=validator,
                settings=settings.proxy,
                http_client=proxy_client,
                fernet_keys_source=fernet_keys,
                metrics=metrics,
            )
            bind_port = 0 if ephemeral_ports else port
            children.append(
                TaskSpec(
                    name=f"proxy-{endpoint_type}",
                    fn=partial(serve_proxy, app, settings.proxy.host, bind_port),
                )
            )
        api_app = create_api_app(
            db, token_check=token_check, events=manager if engine else None, metrics=metrics
        )
        api_port = 0 if ephemeral_ports else settings.api.port
        children.append(
            TaskSpec(name="api", fn=partial(serve_api, api_app, settings.api.host, api_port))
        )
        if sim is not None and engine and presynced:
            master_keys = sim.master.platform.fernet_keys
            for region in sim.regions:
                sim.subcloud(region).platform.set_fernet_keys(master_keys)
            await db.run(partial(seed_eligible_subclouds, audited_at=utcnow()), list(sim.regions))
        system = await stack.enter_async_context(
            open_actor_system(
                *children,
                name="dcorch",
                intensity=RestartIntensity(
                    max_restarts=settings.actors.restart_max, period=settings.actors.restart_period
                ),
                backoff=Backoff(
                    base=settings.actors.restart_backoff, cap=settings.actors.restart_backoff_max
                ),
                shutdown_timeout=settings.service.shutdown_timeout,
            )
        )
        urls: dict[str, str] = {}
        for name in [*upstreams, "api"]:
            task = system.lookup_task(name if name == "api" else f"proxy-{name}")
            bound = task.value
            assert isinstance(bound, list), bound
            urls[name] = str(bound[0])
        _add_runtime_gauges(metrics, dispatcher, db, system, manager if engine else None)
        handle = Dcorch(
            settings=settings,
            db=db,
            system=system,
            dispatcher=dispatcher,
            sync_manager=manager,
            metrics=metrics,
            client=client,
            master=master,
            sim=sim,
            urls=urls,
        )
        handle.token = await _admin_token(client, credentials, master.keystone)
        if sim is not None and engine and not presynced:
            await _register(db, manager, list(sim.regions), manage=True)
        logger.info("dcorch.started urls=%s", urls)
        yield handle
