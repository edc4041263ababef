"""Who may do what through the v1 API, over HTTP with tokens of the simulated master keystone.

Reads need a valid token; a change (any method but GET and HEAD) needs the admin role on the
admin project (``master.project_name``, domain Default), upstream's policy
(docs/behaviour.md#dcorch-v1-api). A refused change answers 403 in the API's error shape and
leaves the database as it was.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio

from dcorch import constants
from dcorch.api.app import Caller, create_api_app, may_change
from dcorch.asgi import serve_asgi
from dcorch.harness import Dcorch

ADMIN_PROJECT = "admin"
REGION = "subcloud1"


def _api(dc: Dcorch, path: str = "") -> str:
    return f"{dc.api_url}/v1.0/{ADMIN_PROJECT}/subclouds{path}"


async def _as_admin(dc: Dcorch, method: str, path: str, body: Any = None) -> Any:
    """A call on the master keystone as dcorch's admin (no proxy: no work recorded)."""
    reply = await dc.client.request(method, dc.master.keystone + path, json=body, headers=dc.auth)
    assert reply.status_code in (200, 201, 204), reply.text
    return reply.json() if reply.content else None


async def _user_with_role(dc: Dcorch, name: str, role: str, project: str) -> str:
    """A new user holding ``role`` on ``project`` (created if missing); returns their token."""
    projects = await _as_admin(dc, "GET", f"/projects?name={project}")
    if projects["projects"]:
        project_id = projects["projects"][0]["id"]
    else:
        made = await _as_admin(dc, "POST", "/projects", {"project": {"name": project}})
        project_id = made["project"]["id"]
    password = f"{name}-pw-1"
    user = await _as_admin(dc, "POST", "/users", {"user": {"name": name, "password": password}})
    [role_ref] = (await _as_admin(dc, "GET", f"/roles?name={role}"))["roles"]
    user_id = user["user"]["id"]
    await _as_admin(dc, "PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_ref['id']}")
    login = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    reply = await dc.client.post(dc.master.keystone + "/auth/tokens", json=login)
    assert reply.status_code == 201, reply.text
    return str(reply.headers["X-Subject-Token"])


def _changes(dc: Dcorch) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every kind of change the API offers, in an order an admin can run them in."""
    return [
        ("POST", _api(dc), {"subcloud": "intruder", "management_ip": "10.0.0.9"}),
        ("PUT", _api(dc, f"/{REGION}"), {"management_state": constants.MANAGEMENT_UNMANAGED}),
        ("PUT", _api(dc, f"/{REGION}"), {"management_state": constants.MANAGEMENT_MANAGED}),
        ("PUT", _api(dc, f"/{REGION}"), {"availability_status": constants.AVAILABILITY_OFFLINE}),
        ("PUT", _api(dc, f"/{REGION}"), {"availability_status": constants.AVAILABILITY_ONLINE}),
        ("PUT", _api(dc, f"/{REGION}"), {"management_ip": "10.9.9.9"}),
        ("PUT", _api(dc, "/subcloud2/initial-sync"), {"initial_sync_state": "requested"}),
        ("DELETE", _api(dc, f"/{REGION}"), None),
        ("PATCH", _api(dc, f"/{REGION}"), {"management_state": "unmanaged"}),
    ]


def _reads(dc: Dcorch) -> list[str]:
    return [
        _api(dc),
        _api(dc, f"/{REGION}"),
        _api(dc, f"/{REGION}/initial-sync"),
        _api(dc, f"/{REGION}/sync-status"),
        _api(dc, f"/{REGION}/orch-requests"),
    ]


async def _state(dc: Dcorch) -> tuple[Any, ...]:
    """What a refused change must leave alone: the subcloud rows and the requests (sync rows
    are not compared: the audit the engine runs after each initial sync writes them)."""
    return (await dc.db.list_subclouds(), await dc.db.count_requests_by_state())


async def _refused_everything(dc: Dcorch, token: str) -> None:
    headers = {"X-Auth-Token": token}
    before = await _state(dc)
    for method, url, body in _changes(dc):
        reply = await dc.client.request(method, url, json=body, headers=headers)
        assert reply.status_code == 403, (method, url, reply.text)
        assert reply.json() == {
            "error": "forbidden",
            "detail": f"{method} needs the admin role on project admin (domain Default)",
        }
    assert await _state(dc) == before
    for url in _reads(dc):
        reply = await dc.client.get(url, headers=headers)
        assert reply.status_code == 200, (url, reply.text)
    listed = (await dc.client.get(_api(dc), headers=headers)).json()["subclouds"]
    assert [s["region_name"] for s in listed] == ["subcloud1", "subcloud2", "subcloud3"]


@pytest.mark.parametrize("role", ["member", "reader"])
async def test_member_and_reader_read_but_change_nothing(dc: Dcorch, role: str) -> None:
    token = await _user_with_role(dc, f"a-{role}", role, ADMIN_PROJECT)
    await _refused_everything(dc, token)


async def test_an_admin_of_another_project_reads_but_changes_nothing(dc: Dcorch) -> None:
    token = await _user_with_role(dc, "tenant-admin", "admin", "tenant")
    await _refused_everything(dc, token)


async def test_the_admin_of_the_admin_project_changes_subclouds(dc: Dcorch) -> None:
    headers = dc.auth
    for method, url, body in _changes(dc)[:-1]:  # the PATCH is refused by routing (405)
        reply = await dc.client.request(method, url, json=body, headers=headers)
        assert reply.status_code == 200, (method, url, reply.text)
    rows = {s.region_name: s for s in await dc.db.list_subclouds()}
    assert sorted(rows) == ["intruder", "subcloud2", "subcloud3"]
    assert rows["intruder"].management_ip == "10.0.0.9"
    assert rows["subcloud2"].initial_sync_state != constants.INITIAL_SYNC_NONE
    refused = await dc.client.patch(_api(dc, "/subcloud2"), json={}, headers=headers)
    assert refused.status_code == 405


async def test_the_admin_project_is_the_configured_one(nursery: trio.Nursery) -> None:
    """``admin_project`` (the service passes ``master.project_name``) names it: with ``ops``, an
    admin of ``admin`` is refused and one of ``ops`` gets past the check (to routing's 405)."""
    admin = frozenset({"admin", "member", "reader"})
    callers = {
        "of-admin": Caller(admin, "admin", "default"),
        "of-ops": Caller(admin, "ops", "default"),
    }

    async def token_check(token: str) -> Caller | None:
        return callers.get(token)

    app = create_api_app(db=None, token_check=token_check, admin_project="ops")
    [url] = await nursery.start(partial(serve_asgi, app, "127.0.0.1", 0))
    async with httpx.AsyncClient(base_url=str(url), trust_env=False) as client:
        path = "/v1.0/ops/subclouds/edge1"
        refused = await client.patch(path, json={}, headers={"X-Auth-Token": "of-admin"})
        assert refused.status_code == 403
        assert refused.json() == {
            "error": "forbidden",
            "detail": "PATCH needs the admin role on project ops (domain Default)",
        }
        passed = await client.patch(path, json={}, headers={"X-Auth-Token": "of-ops"})
        assert passed.status_code == 405


def test_the_rule_needs_role_project_and_domain() -> None:
    admin = frozenset({"admin", "member", "reader"})
    assert may_change(Caller(admin, "admin", "default"), "admin")
    assert not may_change(Caller(admin, "admin", "other-domain"), "admin")  # a look-alike
    assert not may_change(Caller(admin, "admin", "default"), "ops")
    assert not may_change(Caller(frozenset({"member", "reader"}), "admin", "default"), "admin")
    assert not may_change(Caller(admin), "admin")  # not project scoped


async def test_a_token_keystone_cannot_check_now_is_503_not_401(dc: Dcorch) -> None:
    assert dc.sim is not None
    dc.sim.set_master_faults("keystone", offline=True)
    reply = await dc.client.get(_api(dc), headers={"X-Auth-Token": "gAAAAA-never-seen"})
    assert reply.status_code == 503
    assert reply.json()["error"] == "unavailable"
    assert reply.json()["detail"].startswith("cannot validate the token now: ")
    dc.sim.clear_master_faults()
    assert (
        await dc.client.get(_api(dc), headers={"X-Auth-Token": "gAAAAA-never-seen"})
    ).status_code == 401
