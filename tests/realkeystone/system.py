"""The whole system against real Keystones, shared by the end-to-end test and the bench.

Three Keystone 30 instances (gunicorn on loopback, SQLite), a DB-sync agent beside each
(``dcorch.dbsync``), and dcorch with the simulator off, its subclouds registered through the v1
API, so every initial sync and every change takes the real path; region ``SystemController``'s
identity endpoint is dcorch's identity proxy, so the real ``openstack`` CLI writes through it.

The CLI and the Keystone helpers block, so they run in threads: the proxy they talk to is served
by the caller's own event loop.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import trio
from sqlalchemy import func, select

from dcorch.db.schema import orch_job, orch_request
from dcorch.dbsync.agent import DbsyncAgent, open_dbsync_agent
from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import Settings
from tests.realkeystone.keystone import (
    ADMIN_PASSWORD,
    KeystoneInstance,
    add_region_endpoint,
    openstack,
    start_in_parallel,
)

REGION = "SystemController"
SUBCLOUDS = ("subcloud1", "subcloud2")
CONVERGE = 180.0
"""Seconds a change may take to reach both subclouds on a loaded 2-core machine."""
T = TypeVar("T")


@dataclass
class Clouds:
    master: KeystoneInstance
    subclouds: dict[str, KeystoneInstance]


def start_clouds(create: Callable[..., KeystoneInstance]) -> Clouds:
    """The master Keystone (cached: only written through its API) and two subclouds' (no cache:
    their agents write their databases behind their backs), started in parallel."""
    master = create("master", cache=True)
    subs = {name: create(name, cache=False) for name in SUBCLOUDS}
    start_in_parallel([master, *subs.values()])
    return Clouds(master, subs)


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking helper (CLI, urllib) in a thread, so the proxy keeps being served."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def cli(clouds: Clouds, *args: str, **kwargs: Any) -> Awaitable[Any]:
    """The real ``openstack`` CLI against the System Controller, through region SystemController."""
    return blocking(openstack, clouds.master, *args, region=REGION, **kwargs)


@dataclass
class System:
    dc: Dcorch
    clouds: Clouds
    agents: dict[str, DbsyncAgent]
    tokens: dict[str, str]
    """An admin token of each subcloud's Keystone, for checking it through its own API."""

    async def subcloud(self, name: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.clouds.subclouds[name].url + path
        headers = {"X-Auth-Token": self.tokens[name]}
        response = await self.dc.client.request(method, url, headers=headers, **kwargs)
        if response.status_code == 401:  # our token was revoked meanwhile (a password change)
            self.tokens[name] = await blocking(self.clouds.subclouds[name].admin_token)
            headers = {"X-Auth-Token": self.tokens[name]}
            response = await self.dc.client.request(method, url, headers=headers, **kwargs)
        return response

    async def on_both(self, path: str, want: Callable[[httpx.Response], bool], what: str) -> None:
        """Wait until ``want`` holds for ``GET path`` on every subcloud's Keystone."""
        for name in SUBCLOUDS:
            check = functools.partial(self.check, name, path, want)
            await eventually(check, what=f"{what} on {name}")

    async def check(self, name: str, path: str, want: Callable[[httpx.Response], bool]) -> bool:
        """Whether ``want`` holds for ``GET path`` on that subcloud's Keystone now."""
        return want(await self.subcloud(name, "GET", path))

    async def count(self, table: Any) -> int:
        def query(conn: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        return await self.dc.db.run_readonly(query)

    async def requests_of(self, region: str, source: str | None = None) -> list[Any]:
        """The orch_requests for ``region`` (of jobs about ``source`` only, when given), by id."""

        def query(conn: Any) -> list[Any]:
            statement = (
                select(orch_request, orch_job.c.source_resource_id, orch_job.c.operation_type)
                .join(orch_job, orch_job.c.id == orch_request.c.orch_job_id)
                .where(orch_request.c.target_region_name == region)
                .order_by(orch_request.c.id)
            )
            if source is not None:
                statement = statement.where(orch_job.c.source_resource_id == source)
            return list(conn.execute(statement).mappings())

        return await self.dc.db.run_readonly(query)


async def eventually(check: Callable[[], Awaitable[bool]], *, what: str) -> None:
    with trio.move_on_after(CONVERGE):
        while not await check():  # noqa: ASYNC110 - polling another process's state
            await trio.sleep(0.5)
        return
    raise AssertionError(f"not within {CONVERGE} s: {what}")


def _settings(master: KeystoneInstance, master_dbsync: str, **engine: Any) -> Settings:
    return Settings().replace(
        sim={"enabled": False},
        master={
            "keystone_url": master.url,
            "dbsync_url": master_dbsync,
            "sysinv_url": "",
            "dcmanager_url": "",
            "usm_url": "",
            "password": ADMIN_PASSWORD,
        },
        engine={"offline_retry_interval": 2.0, "initial_sync_retry": 5.0, **engine},
    )


@asynccontextmanager
async def open_system(clouds: Clouds, **engine: Any) -> AsyncIterator[System]:
    """Agents beside every Keystone, dcorch with the simulator off, both subclouds registered
    through the v1 API and initially synced, region SystemController pointing at the proxy."""
    async with AsyncExitStack() as stack:
        agents: dict[str, DbsyncAgent] = {}
        for name, keystone in {"master": clouds.master, **clouds.subclouds}.items():
            settings = Settings().replace(
                dbsync={"keystone_database_url": keystone.db_url, "keystone_url": keystone.url}
            )
            agents[name] = await stack.enter_async_context(open_dbsync_agent(settings, port=0))
        settings = _settings(clouds.master, agents["master"].url, **engine)
        dc = await stack.enter_async_context(open_dcorch(settings, ephemeral_ports=True))
        endpoint_ids = await blocking(
            add_region_endpoint, clouds.master, REGION, f"{dc.identity_url}/v3"
        )
        stack.push_async_callback(_drop_endpoints, clouds.master, endpoint_ids)
        tokens = {}
        for name, keystone in clouds.subclouds.items():
            tokens[name] = await blocking(keystone.admin_token)
            await _register(dc, name, keystone, agents[name])
        for name in clouds.subclouds:
            await _wait_initial_sync(dc, name)
        yield System(dc, clouds, agents, tokens)


async def _drop_endpoints(master: KeystoneInstance, ids: list[str]) -> None:
    token = await blocking(master.admin_token)
    for endpoint_id in ids:
        await blocking(master.request, "DELETE", f"/v3/endpoints/{endpoint_id}", token=token)


async def _register(dc: Dcorch, name: str, keystone: KeystoneInstance, agent: DbsyncAgent) -> None:
    """Add and manage a subcloud as an operator would, over HTTP."""
    base = f"{dc.api_url}/v1.0/admin/subclouds"
    body = {
        "subcloud": name,
        "management_ip": "127.0.0.1",
        "software_version": "24.09",
        "endpoints": {"keystone": f"{keystone.url}/v3", "dcdbsync": f"{agent.url}/v1.0"},
        "endpoint_types": ["identity"],
    }
    added = await dc.client.post(base, json=body, headers=dc.auth)
    assert added.status_code in (200, 201), added.text
    states = {"management_state": "managed", "availability_status": "online"}
    managed = await dc.client.put(f"{base}/{name}", json=states, headers=dc.auth)
    assert managed.status_code == 200, managed.text


async def _wait_initial_sync(dc: Dcorch, name: str) -> None:
    url = f"{dc.api_url}/v1.0/admin/subclouds/{name}/initial-sync"

    async def done() -> bool:
        reply = await dc.client.get(url, headers=dc.auth)
        state = reply.json().get("initial_sync_state")
        assert state != "failed", reply.text
        return bool(state == "completed")

    await eventually(done, what=f"initial sync of {name}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def has(**expected: Any) -> Callable[[httpx.Response], bool]:
    """The object in a Keystone answer carries these attributes."""

    def check(response: httpx.Response) -> bool:
        if response.status_code != 200:
            return False
        body = next(iter(response.json().values()))
        return all(body.get(k) == v for k, v in expected.items())

    return check


def gone(response: httpx.Response) -> bool:
    return response.status_code == 404


async def authenticates(
    system: System, name: str, user: str, password: str, project: str | None = None
) -> bool:
    """Whether ``user``/``password`` gets a token from that subcloud's Keystone."""
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"id": project}}
    url = f"{system.clouds.subclouds[name].url}/v3/auth/tokens"
    reply = await system.dc.client.post(url, json={"auth": auth})
    return reply.status_code == 201
