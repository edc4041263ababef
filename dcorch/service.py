"""The dcorch service: the only place where the production parts are wired together.

``open_service`` starts, in order, the database (with its dispatcher), the HTTP clients and one
actor system supervising the purge, the sync manager, the fernet key rotation, one API proxy per
endpoint type, the dcorch v1 API and, with ``rpc.front_doors`` ``rpc`` or ``both``, dcmanager's
RPC (the worker-topic server, the status caster and its outbox); leaving the block stops all in
reverse (data path: ``docs/architecture.md``). One :class:`SubcloudLifecycle` serves both front
doors.
``dcorch serve`` runs it against the real System Controller, the harness (:mod:`dcorch.harness`)
and the bench against the simulated clouds; nothing here imports the simulator.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import TypedDict

import httpx
import trio

from actors import (
    ActorStopped,
    ActorSystem,
    Backoff,
    ChildSpec,
    NodeSnapshot,
    TaskSpec,
    open_actor_system,
)
from dcorch import constants
from dcorch.api.app import Caller, TokenCheckUnavailable, create_api_app
from dcorch.asgi import serve_asgi
from dcorch.db import migrate
from dcorch.db.database import NO_SEAMS, Database, DatabaseSeams, open_database
from dcorch.db.purge import purge_periodically
from dcorch.lifecycle import SubcloudLifecycle
from dcorch.metrics import Metrics
from dcorch.proxy.app import create_proxy_app, serve_proxy
from dcorch.proxy.auth import KeystoneTokenValidator, TokenCache
from dcorch.proxy.errors import ValidationUnavailable
from dcorch.proxy.fernet_audit import (
    CachedFernetKeys,
    FernetKeySource,
    FernetKeysUnavailable,
)
from dcorch.remote.clients import CloudClient
from dcorch.remote.endpoints import (
    EndpointResolver,
    GivenFirstResolver,
    ManagementIpResolver,
    MasterEndpoints,
)
from dcorch.remote.errors import SyncError
from dcorch.remote.http import Credentials, HttpSession, open_http_client
from dcorch.remote.master_health import MasterHealth
from dcorch.rpc.caster import RpcCaster
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.dcmanager_endpoint import DcmanagerEndpoint
from dcorch.rpc.link import BrokerHealth, BrokerState
from dcorch.rpc.server import RpcServer
from dcorch.rpc.status_outbox import RpcStatusReporter, StatusOutbox
from dcorch.settings import Settings
from dcorch.supervision import restart_policy
from dcorch.sync.audit_rules import keyring_password
from dcorch.sync.drivers import apply_request
from dcorch.sync.env import Driver
from dcorch.sync.fernet_rotation import CommandRotator, FernetRotation, FernetRotator
from dcorch.sync.manager import SyncManager
from dcorch.sync.status import DeliveryRecord, Reporter, UnreportedStatus

logger = logging.getLogger(__name__)

PROXY_CONNECTIONS = 200
"""Connections of the proxies' client to the master (separate from the engine's pool)."""


@dataclass
class RpcParts:
    """dcmanager's RPC over RabbitMQ, when ``rpc.front_doors`` is ``rpc`` or ``both``."""

    config: RpcConfig
    server: RpcServer
    """Serves the lifecycle on ``rpc.worker_topic``."""
    caster: RpcCaster | None
    """Casts sync status to ``rpc.dcmanager_state_topic``; None when the engine is off."""
    outbox: StatusOutbox | None
    """The reports waiting for the caster; None when the engine is off."""
    health: BrokerHealth


@dataclass
class Service:
    """Handle to a running service (yielded by :func:`open_service`)."""

    settings: Settings
    db: Database
    system: ActorSystem
    sync_manager: SyncManager | None
    """None when the engine is off (work is recorded, not applied)."""
    metrics: Metrics
    master: MasterEndpoints
    http: HttpSession
    """The engine's authenticated session (master and subclouds)."""
    tokens: TokenCache
    """The one cache of validated client tokens (proxies and v1 API)."""
    urls: dict[str, str]
    """``identity``, ``platform``, ``usm`` (proxies) and ``api`` -> base URL."""
    master_health: MasterHealth | None = None
    """The engine's view of the master's services (``/health``, ``/metrics``)."""
    fernet_rotation: FernetRotation | None = None
    """The periodic rotation of the master's fernet keys; None when it is off."""
    lifecycle: SubcloudLifecycle | None = None
    """The one subcloud lifecycle behind the v1 API and dcmanager's RPC."""
    rpc: RpcParts | None = None
    """dcmanager's RPC; None with ``rpc.front_doors = "http"``."""

    @property
    def identity_url(self) -> str:
        return self.urls[constants.ENDPOINT_TYPE_IDENTITY]

    @property
    def platform_url(self) -> str:
        return self.urls[constants.ENDPOINT_TYPE_PLATFORM]

    @property
    def api_url(self) -> str:
        return self.urls["api"]


class ServiceOptions(TypedDict, total=False):
    """The keyword options of :func:`open_service` that the test harness passes through."""

    ephemeral_ports: bool
    upgrade_db: bool
    engine: bool
    driver: Driver | None
    rng: random.Random | None
    seams: DatabaseSeams
    fernet_rotator: FernetRotator | None


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    master: MasterEndpoints | None = None,
    subclouds: EndpointResolver | None = None,
    ephemeral_ports: bool = False,
    upgrade_db: bool = True,
    engine: bool = True,
    driver: Driver | None = None,
    rng: random.Random | None = None,
    prepare: Callable[[Database], Awaitable[None]] | None = None,
    seams: DatabaseSeams = NO_SEAMS,
    fernet_rotator: FernetRotator | None = None,
) -> AsyncIterator[Service]:
    """Run the whole service until the block exits.

    Args:
        settings: the process settings.
        master: the System Controller's services (default: from ``settings.master``).
        subclouds: where each subcloud's services are, unless given through the v1 API
            (default: the ``[subcloud]`` template on its management IP).
        ephemeral_ports: free ports (tests, bench), a temporary SQLite file unless ``database.url``.
        upgrade_db: migrate the schema first; without it, a schema behind stops start-up.
        engine: run the sync engine; without it work is recorded but not applied.
        driver: applies one request (fault tests wrap :func:`~dcorch.sync.drivers.apply_request`).
        rng: the engine's jitter source (seeded in tests).
        prepare: runs on the open database before any actor starts (bulk registration).
        seams: database fault injection for tests.
        fernet_rotator: rotates the master's fernet keys (default: run
            ``engine.fernet_rotation_command``; the harness rotates the simulated master's).
    """
    master = master or MasterEndpoints.from_settings(settings.master)
    rpc_config = _rpc_config(settings)  # a bad [rpc] stops start-up here, naming the key
    template = None if subclouds else ManagementIpResolver.from_settings(settings.subcloud)
    resolver = GivenFirstResolver(subclouds or template or ManagementIpResolver())
    _log_endpoints(master, template)
    async with AsyncExitStack() as stack:
        if not settings.database.url and settings.service.data_dir == "data" and ephemeral_ports:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dcorch-"))
            settings = settings.replace(service={"data_dir": tmp})
        await trio.Path(settings.service.data_dir).mkdir(parents=True, exist_ok=True)
        if upgrade_db:
            await migrate.upgrade_async(settings.database_url)
        metrics = Metrics()
        db = await stack.enter_async_context(
            open_database(settings, observe_latency=metrics.enqueue_latency.observe, seams=seams)
        )
        if prepare is not None:
            await prepare(db)
        # Separate pools: the engine must not starve the proxies of connections, or vice versa.
        proxy_client = await stack.enter_async_context(
            open_http_client(
                settings.tls,
                max_connections=PROXY_CONNECTIONS,
                max_keepalive=PROXY_CONNECTIONS // 2,
                timeout=settings.proxy.forward_timeout,
            )
        )
        concurrency = max(10, settings.engine.sync_concurrency)
        engine_client = await stack.enter_async_context(
            open_http_client(settings.tls, max_connections=concurrency)
        )
        credentials = Credentials(
            username=settings.master.username,
            password=settings.master.password,
            project_name=settings.master.project_name,
        )
        session = HttpSession(engine_client, credentials, settings.engine.subcloud_http_timeout)
        health = MasterHealth(
            master,
            backoff=settings.engine.request_retry_backoff,
            backoff_max=settings.engine.request_retry_backoff_max,
        )
        outbox: StatusOutbox | None = None
        caster: RpcCaster | None = None
        if rpc_config is not None and engine:
            caster = RpcCaster(rpc_config, rng=rng)
            outbox = StatusOutbox(
                caster,
                backoff=Backoff(
                    base=settings.engine.request_retry_backoff,
                    cap=settings.engine.request_retry_backoff_max,
                ),
                topic=rpc_config.dcmanager_state_topic,
                on_delivered=DeliveryRecord(db),
                rng=rng,
            )
        reporter: Reporter | None = None  # dcmanager's REST API at master.dcmanager
        if outbox is not None:
            reporter = RpcStatusReporter(outbox)
        elif not master.dcmanager:
            reporter = UnreportedStatus()
        manager = (
            SyncManager(
                db,
                settings.engine,
                actor_settings=settings.actors,
                http=session,
                resolver=resolver,
                master=master,
                reporter=reporter,
                driver=driver or apply_request,
                rng=rng,
                health=health,
                # The admin keyring repair is on whenever dcorch logs in as the admin.
                keyring_password=keyring_password(
                    settings.master.username, settings.master.password
                ),
                master_ca_dir=settings.master.ca_cert_dir,
            )
            if engine
            else None
        )
        rotation = (
            _fernet_rotation(settings, master, db, session, health, fernet_rotator)
            if engine
            else None
        )
        tokens = TokenCache(
            KeystoneTokenValidator(master.keystone_root, proxy_client),
            ttl=settings.proxy.token_cache_ttl,
        )
        lifecycle = SubcloudLifecycle(
            db,
            events=manager,
            endpoint_types=master.sync_endpoint_types,
            address_required=template is not None,
        )
        rpc: RpcParts | None = None
        if rpc_config is not None:
            server = RpcServer(DcmanagerEndpoint(lifecycle), rpc_config, rng=rng)
            links: dict[str, BrokerState] = {"server": server.state}
            if caster is not None:
                links["caster"] = caster.state
            rpc = RpcParts(rpc_config, server, caster, outbox, BrokerHealth(links))
        # The proxies' own calls (fernet keys) authenticate as dcorch, over the proxies' pool.
        proxy_session = HttpSession(proxy_client, credentials, settings.proxy.forward_timeout)
        children = _children(
            settings,
            master,
            db,
            manager,
            tokens,
            proxy_client,
            proxy_session,
            metrics,
            health,
            ephemeral_ports,
            lifecycle=lifecycle,
            rotation=rotation,
            rpc=rpc,
        )
        system = await stack.enter_async_context(
            open_actor_system(
                *children,
                name="dcorch",
                **restart_policy(settings.actors),
                shutdown_timeout=settings.service.shutdown_timeout,
            )
        )
        urls: dict[str, str] = {}
        for spec in children:
            if spec.name.startswith("proxy-") or spec.name == "api":
                bound = system.lookup_task(spec.name).value
                assert isinstance(bound, list), bound
                urls[spec.name.removeprefix("proxy-")] = str(bound[0])
        _add_runtime_gauges(metrics, db, system, manager, health)
        if rpc is not None:
            _add_rpc_gauges(metrics, rpc)
        logger.info("dcorch.started urls=%s", urls)
        yield Service(
            settings=settings,
            db=db,
            system=system,
            sync_manager=manager,
            metrics=metrics,
            master=master,
            http=session,
            tokens=tokens,
            urls=urls,
            master_health=health,
            fernet_rotation=rotation,
            lifecycle=lifecycle,
            rpc=rpc,
        )


def _rpc_config(settings: Settings) -> RpcConfig | None:
    """The checked ``[rpc]`` when dcmanager's RPC is on (``front_doors`` ``rpc`` or ``both``).

    Says once what it will use (the broker URL without its password); a broker that is not
    there yet does not stop start-up: the links retry and ``/health`` shows it.
    """
    if settings.rpc.front_doors == "http":
        logger.info("rpc.off front_doors=http (the v1 API drives the lifecycle)")
        return None
    config = RpcConfig.from_settings(settings.rpc)
    logger.info(
        "rpc.on front_doors=%s broker=%s serving=%s/%s (server %s) status_casts=%s/%s",
        config.front_doors,
        config.address.redacted,
        config.control_exchange,
        config.worker_topic,
        config.server,
        config.dcmanager_exchange,
        config.dcmanager_state_topic,
    )
    return config


def _children(
    settings: Settings,
    master: MasterEndpoints,
    db: Database,
    manager: SyncManager | None,
    tokens: TokenCache,
    proxy_client: httpx.AsyncClient,
    proxy_session: HttpSession,
    metrics: Metrics,
    health: MasterHealth,
    ephemeral_ports: bool,
    *,
    lifecycle: SubcloudLifecycle,
    rotation: FernetRotation | None = None,
    rpc: RpcParts | None = None,
) -> list[ChildSpec]:
    """The supervised children of the service, in start order.

    ``lifecycle`` is shared by the v1 API and the RPC server; with ``rpc.front_doors = "rpc"``
    the v1 API only reads (its changes are answered 405).
    """
    children: list[ChildSpec] = [
        TaskSpec(
            name="purge",
            fn=partial(
                purge_periodically,
                db,
                age_days=settings.database.purge_age_days,
                interval=settings.database.purge_interval,
            ),
        )
    ]
    if rpc is not None and rpc.caster is not None and rpc.outbox is not None:
        # Before the engine: its first reports find the outbox running.
        children.append(TaskSpec(name="rpc-caster", fn=rpc.caster.run))
        children.append(TaskSpec(name="status-outbox", fn=rpc.outbox.run))
    if manager is not None:
        children.append(TaskSpec(name="sync", fn=manager.run))
    if rotation is not None:
        children.append(TaskSpec(name="fernet-rotation", fn=rotation.run))
    upstreams = {
        constants.ENDPOINT_TYPE_IDENTITY: (master.keystone_root, settings.proxy.identity_port),
    }
    if master.sysinv:
        upstreams[constants.ENDPOINT_TYPE_PLATFORM] = (
            master.sysinv_root,
            settings.proxy.platform_port,
        )
    if master.usm:
        upstreams[constants.ENDPOINT_TYPE_USM] = (master.usm, settings.proxy.usm_port)
    fernet_keys: FernetKeySource | None = None  # no sysinv: keystone names the audit id
    if master.sysinv:
        fernet_keys = _master_fernet_keys(CloudClient.for_master(proxy_session, master))
    for endpoint_type, (upstream, port) in upstreams.items():
        app = create_proxy_app(
            endpoint_type,
            upstream_url=upstream,
            work_sink=db,
            token_cache=tokens,
            metrics=metrics,
            settings=settings.proxy,
            http_client=proxy_client,
            fernet_keys_source=fernet_keys,
        )
        children.append(
            TaskSpec(
                name=f"proxy-{endpoint_type}",
                fn=partial(serve_proxy, app, settings.proxy.host, 0 if ephemeral_ports else port),
            )
        )

    async def token_check(token: str) -> Caller | None:
        try:
            info = await tokens.validate(token)
        except ValidationUnavailable as exc:
            raise TokenCheckUnavailable(str(exc)) from None
        if info is None:
            return None
        return Caller(info.roles, info.project_name, info.project_domain_id)

    refused = None
    if rpc is not None and not rpc.config.http_front_door:
        refused = (
            'the subcloud lifecycle is driven by dcmanager\'s RPC (rpc.front_doors = "rpc"): '
            'the v1 API only reads; set rpc.front_doors = "both" to change subclouds here too'
        )
    api_app = create_api_app(
        db,
        token_check=token_check,
        metrics=metrics,
        master_health=health,
        initial_sync_failures=manager,
        admin_project=settings.master.project_name,
        lifecycle=lifecycle,
        broker_health=rpc.health if rpc is not None else None,
        changes_refused=refused,
    )
    api_port = 0 if ephemeral_ports else settings.api.port
    children.append(
        TaskSpec(name="api", fn=partial(serve_asgi, api_app, settings.api.host, api_port))
    )
    if rpc is not None:
        # Last: dcmanager's calls find the engine and the API's database face running.
        children.append(TaskSpec(name="rpc-server", fn=rpc.server.run))
    return children


def _fernet_rotation(
    settings: Settings,
    master: MasterEndpoints,
    db: Database,
    http: HttpSession,
    health: MasterHealth,
    rotator: FernetRotator | None,
) -> FernetRotation | None:
    """The engine's rotation of the master's fernet keys, or None (saying once why it is off).

    The keys are read back uncached, through the engine's session and the master's health
    tracker, and committed through the database like the proxies' work
    (docs/behaviour.md#fernet-rotation).
    """
    engine = settings.engine
    off = None
    if not master.sysinv:
        off = "no master sysinv (platform sync off): nothing to rotate keys for or push them to"
    elif engine.fernet_rotation_interval <= 0:
        off = "engine.fernet_rotation_interval is 0"
    elif rotator is None and not engine.fernet_rotation_command:
        off = "engine.fernet_rotation_command is empty"
    if off is not None:
        logger.info("fernet_rotation.off reason=%s", off)
        return None
    if rotator is None:
        rotator = CommandRotator(
            engine.fernet_rotation_command, timeout=engine.fernet_rotation_timeout
        )
    logger.info("fernet_rotation.on every=%gs rotator=%r", engine.fernet_rotation_interval, rotator)
    keys = CloudClient.for_master(http, master, health).get_fernet_keys
    return FernetRotation(rotator, keys, db, interval=engine.fernet_rotation_interval)


def _master_fernet_keys(master: CloudClient) -> CachedFernetKeys:
    """The master's fernet keys for the identity proxy, fetched as dcorch itself.

    Not with the client's token: sysinv gives them to admins only, and a user revoking their
    own token need not be one (docs/behaviour.md#token-revocation-audit-id).
    """

    async def fetch() -> object:
        try:
            return await master.get_fernet_keys()
        except SyncError as exc:
            raise FernetKeysUnavailable(str(exc)) from None

    return CachedFernetKeys(fetch)


def _log_endpoints(master: MasterEndpoints, template: ManagementIpResolver | None) -> None:
    """Say once, at start-up, every URL the service will use and what it leaves out."""
    logger.info(
        "endpoints.master keystone=%s dbsync=%s sysinv=%s dcmanager=%s usm=%s",
        master.keystone,
        master.dcdbsync,
        master.sysinv or "(none)",
        master.dcmanager or "(none)",
        master.usm or "(none)",
    )
    if template is not None:
        urls = template.template()
        logger.info(
            "endpoints.subcloud_template keystone=%s sysinv=%s dcdbsync=%s "
            "(unless given when the subcloud is added)",
            urls.keystone,
            urls.sysinv,
            urls.dcdbsync,
        )
    for note in master.notes():
        logger.info("endpoints.note %s", note)


def _walk(node: NodeSnapshot) -> Iterator[NodeSnapshot]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _add_runtime_gauges(
    metrics: Metrics,
    db: Database,
    system: ActorSystem,
    manager: SyncManager | None,
    health: MasterHealth,
) -> None:
    """Queue depths, restart counts and the master's health, read from the live objects at
    scrape time."""

    def trees() -> list[NodeSnapshot]:
        found = [system.snapshot(), db.snapshot()]
        if manager is not None:
            with suppress(ActorStopped):  # the sync manager is between restarts
                found.append(manager.snapshot())
        return found

    def depths() -> Iterator[tuple[dict[str, str], float]]:
        stats = db.statistics()
        yield {"mailbox": "dispatcher"}, float(stats.orders_queued)
        yield {"mailbox": "database"}, float(stats.writes_queued)
        yield {"mailbox": "commit_feed"}, float(db.commits.pending())
        sync = [t for t in trees() if t.name == "sync"]
        depth = sum(node.mailbox_depth or 0 for tree in sync for node in _walk(tree))
        yield {"mailbox": "sync_actors"}, float(depth)

    def restarts() -> Iterator[tuple[dict[str, str], float]]:
        for tree in trees():
            yield {"tree": tree.name}, float(sum(node.restarts for node in _walk(tree)))

    metrics.add_gauge("dcorch_mailbox_depth", "messages waiting in bounded queues", depths)
    metrics.add_gauge("dcorch_actor_restarts", "restarts in each supervision tree", restarts)
    metrics.add_gauge(
        "dcorch_master_up", "master dependency reachable (1) or down (0)", health.up_series
    )
    metrics.add_counter(
        "dcorch_master_failures_total",
        "failed engine calls to each master dependency",
        health.failure_series,
    )

    def untargeted() -> Iterator[tuple[dict[str, str], float]]:
        for (ept, rtype, op), count in sorted(db.dispatcher.stats.untargeted.items()):
            yield {"endpoint_type": ept, "resource_type": rtype, "operation": op}, float(count)

    metrics.add_counter(
        "dcorch_work_orders_untargeted_total",
        "committed work orders that found no eligible subcloud",
        untargeted,
    )
    if manager is not None:
        metrics.add_counter(
            "dcorch_requests_noop_total",
            "requests completed without changing anything, by reason",
            manager.noops.series,
        )


def _add_rpc_gauges(metrics: Metrics, rpc: RpcParts) -> None:
    """The broker links and the status outbox, read at scrape time."""
    metrics.add_gauge(
        "dcorch_rpc_broker_up",
        "RabbitMQ link of dcmanager's RPC connected (1) or not (0)",
        rpc.health.up_series,
    )
    metrics.add_counter(
        "dcorch_rpc_broker_connects_total",
        "connections to RabbitMQ that got ready, per link",
        rpc.health.connects_series,
    )
    outbox = rpc.outbox
    if outbox is None:
        return

    def waiting() -> Iterator[tuple[dict[str, str], float]]:
        yield {}, float(len(outbox.waiting()))

    def delivered() -> Iterator[tuple[dict[str, str], float]]:
        yield {}, float(outbox.delivered)

    metrics.add_gauge(
        "dcorch_status_outbox_waiting", "sync status reports waiting for the broker", waiting
    )
    metrics.add_counter(
        "dcorch_status_casts_total", "sync status reports cast to dcmanager", delivered
    )
