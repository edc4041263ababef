"""Start the simulated clouds and hand back a handle to drive and inspect them.

Example::

    async with open_sim_cloud(settings.sim, master=settings.master, subclouds=100) as sim:
        async with httpx.AsyncClient() as client:
            token = await sim.login(client)            # or sim.admin_token() in-process
            await client.get(sim.endpoints.subcloud_keystone("subcloud7") + "/users",
                             headers={"X-Auth-Token": sim.admin_token("subcloud7")})
        await sim.wait_converged(timeout=30)

The server (:func:`dcorch.asgi.serve_asgi`) runs in the context manager's nursery, cancelled on
exit so a test never leaks it; ``nursery.start`` returns the bound URL once the socket listens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol

import trio

from dcorch.asgi import serve_asgi
from dcorch.remote.http import Credentials
from dcorch.settings import MasterSettings, SimSettings
from dcorch.sim import control, dcmanager
from dcorch.sim.convergence import ConvergenceCheck
from dcorch.sim.endpoints import SimEndpoints
from dcorch.sim.faults import Faults
from dcorch.sim.records import DEFAULT_DOMAIN_ID
from dcorch.sim.router import SimApp
from dcorch.sim.state import CloudState, SimState


class HttpClient(Protocol):
    """The part of ``httpx.AsyncClient`` :meth:`SimCloud.login` uses (no httpx import here)."""

    async def post(self, url: str, *, json: Any = None) -> Any: ...


class NotConverged(AssertionError):
    """Raised by :meth:`SimCloud.wait_converged` when subclouds still differ at the deadline."""

    def __init__(self, differences: dict[str, list[str]]) -> None:
        self.differences = differences
        shown = "; ".join(f"{r}: {', '.join(d[:3])}" for r, d in list(differences.items())[:5])
        super().__init__(f"{len(differences)} subclouds not converged: {shown}")


class SimCloud:
    """Handle on a running simulator: URLs, in-process state, control and inspection."""

    def __init__(self, state: SimState, base_url: str) -> None:
        self.state = state
        self.base_url = base_url
        self.endpoints = SimEndpoints(base_url)
        self.admin = Credentials(state.admin_user, state.admin_password, state.admin_project)
        """What every simulated keystone accepts for its admin user."""

    def __repr__(self) -> str:
        return f"<SimCloud {self.base_url} subclouds={len(self.state.subclouds)}>"

    # --- inspection -------------------------------------------------------------------------

    @property
    def master(self) -> CloudState:
        """The System Controller's state."""
        return self.state.master

    @property
    def regions(self) -> list[str]:
        """Subcloud region names in creation order."""
        return list(self.state.subclouds)

    def subcloud(self, region: str) -> CloudState:
        """A subcloud's state (``.identity.users``, ``.platform.certificates``, ``.counters``).

        Raises:
            KeyError: no such subcloud.
        """
        return self.state.subclouds[region]

    def dump(self, region: str | None = None) -> dict[str, Any]:
        """The same data as ``GET /sim/.../state`` for the master (None) or a subcloud."""
        return control.dump_state(self.master if region is None else self.subcloud(region))

    def status_reports(
        self, region: str | None = None, endpoint_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Endpoint-status reports received by the simulated dcmanager, in order."""
        return dcmanager.reports(self.state, region, endpoint_type)

    def latest_status(self, region: str, endpoint_type: str) -> str | None:
        """The last reported sync status of one pair."""
        return dcmanager.latest_status(self.state, region, endpoint_type)

    def differences(
        self, regions: Iterable[str] | None = None, *, ignore: Iterable[str] = ()
    ) -> dict[str, list[str]]:
        """``{region: [difference, ...]}`` of subclouds that differ from the master."""
        return ConvergenceCheck(self.state, tuple(ignore)).run(regions)

    async def wait_converged(
        self,
        regions: Iterable[str] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109 - the harness's polling API asks for it by name
        ignore: Iterable[str] = (),
        poll_interval: float = 0.1,
    ) -> None:
        """Poll in-process state until the subclouds match the master.

        Raises:
            NotConverged: still differing at the deadline; carries the differences.
        """
        names = None if regions is None else list(regions)
        deadline = trio.current_time() + timeout
        while True:
            diff = self.differences(names, ignore=ignore)
            if not diff:
                return
            if trio.current_time() >= deadline:
                raise NotConverged(diff)
            await trio.sleep(poll_interval)

    # --- control ----------------------------------------------------------------------------

    def add_subclouds(self, count: int = 0, names: Iterable[str] = ()) -> list[str]:
        """Add subclouds (``<prefix><n>`` numbering continues); returns the new names."""
        return self.state.add_subclouds(count, list(names))

    def remove_subcloud(self, region: str) -> None:
        """Forget a subcloud (its URLs answer 404 from now on).

        Raises:
            KeyError: no such subcloud.
        """
        if not self.state.remove_subcloud(region):
            raise KeyError(region)

    def set_faults(self, region: str, faults: Faults | None = None, **fields: Any) -> Faults:
        """Set a subcloud's faults, from a :class:`Faults` or keyword fields (validated)."""
        if faults is None:
            faults = Faults.from_json(fields)
        control.set_faults(self.subcloud(region), faults)
        return faults

    def clear_faults(self, region: str) -> None:
        """Back to a healthy subcloud."""
        control.set_faults(self.subcloud(region), Faults())

    def set_master_faults(
        self, service: str, faults: Faults | None = None, **fields: Any
    ) -> Faults:
        """Set the faults of one master service (``keystone``, ``sysinv``, ``dcdbsync``,
        ``dcmanager``): ``set_master_faults("dcdbsync", offline=True)``."""
        if faults is None:
            faults = Faults.from_json(fields)
        control.set_master_faults(self.master, service, faults)
        return faults

    def clear_master_faults(self, service: str | None = None) -> None:
        """One master service healthy again (None: all of them)."""
        for name in [service] if service else list(self.state.master_faults):
            control.set_master_faults(self.master, name, Faults())

    def admin_token(self, region: str | None = None) -> str:
        """A project-scoped admin token minted in-process (no HTTP), master if region is None."""
        cloud = self.master if region is None else self.subcloud(region)
        identity = cloud.identity
        user = identity.find_name("user", DEFAULT_DOMAIN_ID, self.admin.username)
        project = identity.find_name("project", DEFAULT_DOMAIN_ID, self.admin.project_name)
        if user is None or project is None:
            raise LookupError(f"no admin user/project in {cloud.region}")
        now = self.state.wall_clock()
        token, _ = cloud.platform.codec.issue(
            user["user"]["id"],
            ["password"],
            project["project"]["id"],
            now + self.state.token_ttl,
            now,
        )
        return token

    async def login(self, client: HttpClient, region: str | None = None) -> str:
        """Authenticate over HTTP as the admin (master if region is None); returns the token."""
        url = (
            self.endpoints.master_keystone
            if region is None
            else self.endpoints.subcloud_keystone(region)
        )
        response = await client.post(f"{url}/auth/tokens", json=self.admin.auth_body())
        response.raise_for_status()
        return str(response.headers["x-subject-token"])


@asynccontextmanager
async def open_sim_cloud(
    settings: SimSettings | None = None,
    master: MasterSettings | None = None,
    *,
    subclouds: int | None = None,
    host: str | None = None,
    port: int | None = None,
    latency_ms: float | None = None,
    distinct_default_ids: bool = False,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[SimCloud]:
    """Run the simulated System Controller and subclouds on one loopback HTTP server.

    Args:
        settings: ``[sim]`` settings (count, host, port, name prefix, default latency).
        master: ``[master]`` settings: the admin credentials, master region name and the
            directory where the simulated master writes its CA files (``ca_cert_dir``).
        subclouds, host, latency_ms: override ``settings``' own (latency: every subcloud
            request); so does ``port`` (0 = free).
        distinct_default_ids: give each subcloud's default users/projects/roles their own ids
            (as separately installed clouds have) instead of the master's.
        wall_clock: the clock for token expiry and record timestamps.
    """
    sim_settings = settings or SimSettings()
    master_settings = master or MasterSettings()
    state = SimState(
        admin_user=master_settings.username,
        admin_password=master_settings.password,
        admin_project=master_settings.project_name,
        master_region=master_settings.region_name,
        name_prefix=sim_settings.name_prefix,
        wall_clock=wall_clock,
        distinct_default_ids=distinct_default_ids,
        ca_dir=master_settings.ca_cert_dir,
    )
    state.default_latency_ms = sim_settings.latency_ms if latency_ms is None else latency_ms
    state.add_subclouds(sim_settings.subclouds if subclouds is None else subclouds)
    bind_host = host or sim_settings.host
    bind_port = sim_settings.port if port is None else port
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(
                serve_asgi, SimApp(state), bind_host, bind_port, quiet=True, guard_keepalive=False
            )
        )
        try:
            yield SimCloud(state, binds[0])
        finally:
            nursery.cancel_scope.cancel()
