"""dcorch against real Keystones: the System Controller's and two subclouds', each with its agent.

Three Keystone 30 instances (gunicorn on loopback, SQLite), a DB-sync agent beside each
(``dcorch.dbsync``), and dcorch with the simulator off, its subclouds registered through the v1
API, so every initial sync and every change takes the real path. The operator drives it with the
real ``openstack`` CLI through region ``SystemController``, whose identity endpoint is dcorch's
identity proxy; each change is then checked on both subcloud Keystones through their own API.

The CLI and the Keystone helpers block, so they run in threads: the proxy they talk to is served
by this test's own event loop.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
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
    openstack_run,
    start_in_parallel,
)

pytestmark = [pytest.mark.keystone, pytest.mark.slow, pytest.mark.timeout(900)]

REGION = "SystemController"
SUBCLOUDS = ("subcloud1", "subcloud2")
CONVERGE = 180.0
"""Seconds a change may take to reach both subclouds on a loaded 2-core machine."""
T = TypeVar("T")


@dataclass
class Clouds:
    master: KeystoneInstance
    subclouds: dict[str, KeystoneInstance]


@pytest.fixture(scope="module")
def clouds(keystone_factory: Any) -> Clouds:
    """The master Keystone (cached: only written through its API) and two subclouds' (no cache:
    their agents write their databases behind their backs)."""
    master = keystone_factory.create("master", cache=True)
    subs = {name: keystone_factory.create(name, cache=False) for name in SUBCLOUDS}
    start_in_parallel([master, *subs.values()])
    return Clouds(master, subs)  # the factory stops them at the session's end


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

    async def requests_of(self, region: str) -> list[Any]:
        def query(conn: Any) -> list[Any]:
            rows = conn.execute(
                select(orch_request).where(orch_request.c.target_region_name == region)
            )
            return list(rows.mappings())

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


async def test_operator_workflow_reaches_both_subclouds(clouds: Clouds) -> None:
    async with open_system(clouds) as system:
        project = await cli(clouds, "project", "create", unique("proj"), "--domain", "default")
        await system.on_both(f"/v3/projects/{project['id']}", has(name=project["name"]), "project")
        await cli(clouds, "project", "set", project["id"], "--description", "edge team")
        await system.on_both(
            f"/v3/projects/{project['id']}", has(description="edge team"), "project set"
        )

        name, password = unique("user"), "first-Passw0rd"
        user = await cli(
            clouds, "user", "create", name, "--password", password, "--project", project["id"]
        )
        path = f"/v3/users/{user['id']}"
        await system.on_both(path, has(name=name, default_project_id=project["id"]), "user")
        for sc in SUBCLOUDS:  # the master's password hash came along: the same password works
            await eventually(
                functools.partial(authenticates, system, sc, name, password),
                what=f"login on {sc}",
            )
        await cli(clouds, "user", "set", user["id"], "--email", "ops@example.com")
        await system.on_both(path, has(email="ops@example.com"), "user set")
        await cli(clouds, "user", "set", "--disable", user["id"])
        await system.on_both(path, has(enabled=False), "user disable")
        await cli(clouds, "user", "set", "--enable", user["id"])
        await system.on_both(path, has(enabled=True), "user enable")

        role = await cli(clouds, "role", "create", unique("role"))
        await system.on_both(f"/v3/roles/{role['id']}", has(name=role["name"]), "role")
        member = await cli(clouds, "role", "show", "member")
        for role_id in (role["id"], member["id"]):
            await cli(
                clouds, "role", "add", "--project", project["id"], "--user", user["id"], role_id
            )
        grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{role['id']}"
        await system.on_both(grant, lambda r: r.status_code == 204, "role add")

        group = await cli(clouds, "group", "create", unique("group"), "--domain", "default")
        await system.on_both(f"/v3/groups/{group['id']}", has(name=group["name"]), "group")
        await cli(clouds, "group", "add", "user", group["id"], user["id"])
        members = f"/v3/groups/{group['id']}/users/{user['id']}"
        await system.on_both(members, lambda r: r.status_code == 204, "group add user")
        await cli(clouds, "group", "remove", "user", group["id"], user["id"])
        await system.on_both(members, gone, "group remove user")
        await cli(clouds, "group", "delete", group["id"])
        await system.on_both(f"/v3/groups/{group['id']}", gone, "group delete")

        # Self-service: the user changes their own password through the proxy (no admin role).
        new_password = "second-Passw0rd"
        await trio.sleep(1.1)  # tokens issued in the second of a revocation are refused
        await cli(
            clouds,
            "user",
            "password",
            "set",
            "--password",
            new_password,
            "--original-password",
            password,
            user=name,
            password=password,
            project=project["name"],
        )
        for sc in SUBCLOUDS:
            await eventually(
                functools.partial(authenticates, system, sc, name, new_password, project["id"]),
                what=f"new password on {sc}",
            )
            assert not await authenticates(system, sc, name, password)

        await cli(
            clouds, "role", "remove", "--project", project["id"], "--user", user["id"], role["id"]
        )
        await system.on_both(grant, gone, "role remove")

        # An admin revokes a token: the revocation event reaches both subclouds.
        issued = await blocking(openstack, clouds.master, "token", "issue")
        status, body = await blocking(clouds.master.validate_token, issued["id"])
        assert status == 200, body
        audit_id = body["token"]["audit_ids"][0]
        await cli(clouds, "token", "revoke", issued["id"])
        for sc in SUBCLOUDS:

            async def revoked(sc: str = sc) -> bool:
                reply = await system.subcloud(sc, "GET", "/v3/OS-REVOKE/events")
                events = reply.json().get("events", []) if reply.status_code == 200 else []
                return any(e.get("audit_id") == audit_id for e in events)

            await eventually(revoked, what=f"revocation event on {sc}")

        await cli(clouds, "role", "delete", role["id"])
        await system.on_both(f"/v3/roles/{role['id']}", gone, "role delete")
        await cli(clouds, "user", "delete", user["id"])
        await system.on_both(path, gone, "user delete")
        await cli(clouds, "project", "delete", project["id"])
        await system.on_both(f"/v3/projects/{project['id']}", gone, "project delete")

        for sc in SUBCLOUDS:
            states = {r["state"] for r in await system.requests_of(sc)}
            assert states <= {"completed"}, states


async def test_stopped_subcloud_catches_up_in_order(clouds: Clouds) -> None:
    async with open_system(clouds) as system:
        down = clouds.subclouds["subcloud2"]
        before = {r["id"] for r in await system.requests_of("subcloud2")}
        await blocking(down.stop)
        name = unique("late")
        user = await cli(clouds, "user", "create", name, "--password", "late-Passw0rd")
        await cli(clouds, "user", "set", user["id"], "--description", "first")
        await cli(clouds, "user", "set", user["id"], "--description", "second")
        path = f"/v3/users/{user['id']}"
        await eventually(
            lambda: system.check("subcloud1", path, has(description="second")),
            what="subcloud1 while subcloud2 is down",
        )
        await blocking(down.restart)
        system.tokens["subcloud2"] = await blocking(down.admin_token)
        await eventually(
            lambda: system.check("subcloud2", path, has(name=name, description="second")),
            what="subcloud2 after restart",
        )
        new = [r for r in await system.requests_of("subcloud2") if r["id"] not in before]
        assert [r["state"] for r in new] == ["completed"] * 3, new
        finished = [r["updated_at"] for r in sorted(new, key=lambda r: r["id"])]
        assert finished == sorted(finished)  # applied in the order they were made


async def test_audit_restores_a_user_deleted_on_a_subcloud(clouds: Clouds) -> None:
    async with open_system(clouds, audit_interval=10.0) as system:
        user = await cli(clouds, "user", "create", unique("kept"), "--password", "kept-Passw0rd")
        path = f"/v3/users/{user['id']}"
        await system.on_both(path, has(name=user["name"]), "user")
        deleted = await system.subcloud("subcloud1", "DELETE", path)
        assert deleted.status_code == 204, deleted.text
        await eventually(
            lambda: system.check("subcloud1", path, has(name=user["name"])),
            what="the audit restoring the user on subcloud1",
        )
        await cli(clouds, "user", "delete", user["id"])


async def test_bad_tokens_and_non_admin_writes_get_keystones_answer(clouds: Clouds) -> None:
    async with open_system(clouds) as system:
        dc = system.dc
        jobs = await system.count(orch_job)
        body = {"user": {"name": unique("nobody")}}
        bad = {"X-Auth-Token": "not-a-token"}
        proxied = await dc.client.post(f"{dc.identity_url}/v3/users", json=body, headers=bad)
        direct = await dc.client.post(f"{clouds.master.url}/v3/users", json=body, headers=bad)
        assert proxied.status_code == direct.status_code == 401
        shape = {k: v for k, v in direct.json()["error"].items() if k != "message"}
        assert {k: v for k, v in proxied.json()["error"].items() if k != "message"} == shape
        assert await system.count(orch_job) == jobs

        name, password = unique("member"), "member-Passw0rd"
        project = await cli(clouds, "project", "create", unique("team"))
        await cli(
            clouds, "user", "create", name, "--password", password, "--project", project["id"]
        )
        await cli(clouds, "role", "add", "--project", project["id"], "--user", name, "member")
        jobs = await system.count(orch_job)
        as_member = {"user": name, "password": password, "project": project["name"]}
        refused = []
        for region in (REGION, None):  # through the proxy, then straight to keystone
            result = await blocking(
                openstack_run,
                clouds.master,
                "user",
                "create",
                unique("x"),
                region=region,
                **as_member,
            )
            assert result.returncode != 0, result.stdout
            refused.append(result.stderr)
        forbidden = "You are not authorized to perform the requested action: identity:create_user."
        assert all(forbidden in err and "ForbiddenException: 403" in err for err in refused), (
            refused
        )
        assert await system.count(orch_job) == jobs  # Keystone's refusal recorded nothing
