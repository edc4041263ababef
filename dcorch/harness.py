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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Unpack

import httpx
import trio

from dcorch import constants
from dcorch.db.database import Database
from dcorch.db.errors import SubcloudAlreadyExists
from dcorch.db.rows import SubcloudBacklog
from dcorch.db.schema import utcnow
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.remote.endpoints import MasterEndpoints, check_master_settings
from dcorch.remote.http import Credentials, open_http_client
from dcorch.service import Service, ServiceOptions, open_service
from dcorch.settings import Settings
from dcorch.sim import NotConverged, SimCloud, open_sim_cloud
from dcorch.sim.endpoints import SimResolver
from dcorch.sim.fernet import SimFernetRotator

logger = logging.getLogger(__name__)

SOFTWARE_VERSION = "24.09"
"""What simulated subclouds are registered with."""
CALLER_CONNECTIONS = 500
"""Connections of the handle's own client (the caller of the proxies)."""
POLL_INTERVAL = 0.1
"""Shortest pause between convergence checks (the commit feed has one reader: the engine)."""


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
        regions: Sequence[str] | None = None,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - mirrors SimCloud.wait_converged
        ignore: Iterable[str] = (),
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """Wait until dcorch is done with every managed, online subcloud (or the listed ones).

        Done means all three, read together (docs/behaviour.md#harness-convergence): the
        database says its initial sync is ``completed`` and none of its requests is ``queued``
        or ``in-progress`` (``failed``, ``timed-out`` and ``aborted`` are final: the next audit
        repairs what they left), and the simulator says it matches the master (``ignore``:
        categories not compared). A listed subcloud must be managed and online too. Each poll
        waits at least twice as long as the check took, so thousands of subclouds do not keep
        the database busy.

        Raises:
            NotConverged: not done at the deadline; per subcloud, why (initial sync state,
                work still pending, the differing categories and differences).
        """
        sim = self._sim()
        names = None if regions is None else list(regions)
        ignored = tuple(ignore)
        deadline = trio.current_time() + timeout
        while True:
            started = trio.current_time()
            if not await self._not_converged(sim, names, ignored):
                return
            now = trio.current_time()
            if now >= deadline:
                raise NotConverged(await self._not_converged(sim, names, ignored, explain=True))
            await trio.sleep(min(max(poll_interval, 2 * (now - started)), deadline - now))

    async def _not_converged(
        self,
        sim: SimCloud,
        regions: list[str] | None,
        ignore: tuple[str, ...],
        *,
        explain: bool = False,
    ) -> dict[str, list[str]]:
        """``{region: reasons}`` of the subclouds that are not done yet (see wait_converged).

        Only subclouds the database finds done are compared with the master, unless
        ``explain`` (the error at the deadline says everything that is missing).
        """
        backlogs = {b.region_name: b for b in await self.db.subcloud_backlogs(regions)}
        wanted = (
            list(regions)
            if regions is not None
            else [b.region_name for b in backlogs.values() if _syncing(b)]
        )
        missing: dict[str, list[str]] = {}
        compared: list[str] = []
        for region in wanted:
            backlog = backlogs.get(region)
            reasons = _backlog_reasons(backlog) if backlog else ["not registered in dcorch"]
            simulated = region in sim.state.subclouds
            if not simulated:
                reasons.append("not a simulated subcloud")
            if reasons:
                missing[region] = reasons
            if simulated and (explain or not reasons):
                compared.append(region)
        for region, differences in sim.differences(compared, ignore=ignore).items():
            categories = sorted({d.split(":", 1)[0] for d in differences})
            summary = f"differs from the master in {', '.join(categories)}"
            missing[region] = [*missing.get(region, []), summary, *differences]
        return missing


def _syncing(backlog: SubcloudBacklog) -> bool:
    """dcorch syncs a subcloud that is managed and online (an offline one keeps its queue)."""
    return (
        backlog.management_state == constants.MANAGEMENT_MANAGED
        and backlog.availability_status == constants.AVAILABILITY_ONLINE
    )


def _backlog_reasons(backlog: SubcloudBacklog) -> list[str]:
    """Why the database says dcorch is not done with this subcloud (empty: it is done)."""
    reasons = []
    if backlog.management_state != constants.MANAGEMENT_MANAGED:
        reasons.append(f"management_state {backlog.management_state or 'not set'}")
    if backlog.availability_status != constants.AVAILABILITY_ONLINE:
        reasons.append(f"availability_status {backlog.availability_status}")
    if backlog.initial_sync_state != constants.INITIAL_SYNC_COMPLETED:
        reasons.append(f"initial_sync_state {backlog.initial_sync_state}")
    if backlog.work:
        reasons.append(f"{backlog.work} requests queued or in progress")
    return reasons


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
