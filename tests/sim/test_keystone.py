"""The simulated keystone over real HTTP: tokens, CRUD, assignments and error codes."""

from __future__ import annotations

import base64

import httpx
import msgpack
import pytest
from cryptography.fernet import Fernet, MultiFernet

from dcorch.sim import SimCloud
from tests.sim.conftest import auth


async def test_token_issue_validate_revoke_and_audit_id_roundtrip(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    ks = sim.endpoints.master_keystone
    r = await client.post(f"{ks}/auth/tokens", json=sim.admin.auth_body())
    assert r.status_code == 201
    token = r.headers["x-subject-token"]
    body = r.json()["token"]
    assert body["user"]["name"] == "admin"
    assert body["project"]["name"] == "admin"
    assert [role["name"] for role in body["roles"]] == ["admin"]
    assert body["expires_at"].endswith("Z")
    assert len(body["audit_ids"]) == 1
    assert "=" not in token

    # the proxy's extraction: keys from sysinv, restore padding, decrypt, msgpack, last element
    keys = (
        await client.get(
            f"{sim.endpoints.master_sysinv}/fernet_repo", headers={"X-Auth-Token": token}
        )
    ).json()
    multi = MultiFernet([Fernet(k["key"]) for k in keys])
    plain = multi.decrypt((token + "=" * (-len(token) % 4)).encode())
    payload = msgpack.unpackb(plain)
    assert payload[0] == 0
    assert payload[1] == body["user"]["id"]
    assert payload[3] == body["project"]["id"]
    assert payload[2] == 2  # "password" is bit 1 of keystone's method list
    audit = base64.urlsafe_b64encode(payload[-1][0]).rstrip(b"=").decode()
    assert audit == body["audit_ids"][0]

    headers = {"X-Auth-Token": token, "X-Subject-Token": token}
    r = await client.get(f"{ks}/auth/tokens", headers=headers)
    assert r.status_code == 200
    assert r.json()["token"]["audit_ids"] == [audit]
    assert (await client.head(f"{ks}/auth/tokens", headers=headers)).status_code == 200

    other = await sim.login(client)
    r = await client.delete(
        f"{ks}/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert r.status_code == 204
    events = sim.master.identity.revocations
    assert events[audit]["audit_id"] == audit
    r = await client.get(
        f"{ks}/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": 404,
        "message": "Failed to validate token",
        "title": "Not Found",
    }
    assert (await client.get(f"{ks}/users", headers={"X-Auth-Token": token})).status_code == 401
    r = await client.get(f"{ks}/OS-REVOKE/events", headers={"X-Auth-Token": other})
    assert [e["audit_id"] for e in r.json()["events"]] == [audit]


async def test_token_errors_and_version_doc(sim: SimCloud, client: httpx.AsyncClient) -> None:
    ks = sim.endpoints.master_keystone
    assert (await client.get(ks)).json()["version"]["id"] == "v3.14"
    bad = sim.admin.auth_body()
    bad["auth"]["identity"]["password"]["user"]["password"] = "wrong"
    assert (await client.post(f"{ks}/auth/tokens", json=bad)).status_code == 401
    assert (await client.post(f"{ks}/auth/tokens", content=b"{nope")).status_code == 400
    assert (await client.post(f"{ks}/auth/tokens", json={"auth": {}})).status_code == 400
    r = await client.get(f"{ks}/users", headers={"X-Auth-Token": "garbage"})
    assert r.status_code == 401
    assert r.json()["error"]["title"] == "Unauthorized"
    r = await client.put(f"{ks}/users", headers=auth(sim))
    assert r.status_code == 405
    assert (await client.get(f"{ks}/nothing/here", headers=auth(sim))).status_code == 404
    # a subcloud's keystone does not accept the master's token
    r = await client.get(f"{sim.endpoints.subcloud_keystone('subcloud1')}/users", headers=auth(sim))
    assert r.status_code == 401
    token_auth = {"auth": {"identity": {"methods": ["token"], "token": {"id": sim.admin_token()}}}}
    r = await client.post(f"{ks}/auth/tokens", json=token_auth)
    assert r.status_code == 201
    assert "project" not in r.json()["token"]


async def test_user_crud_and_password_change(sim: SimCloud, client: httpx.AsyncClient) -> None:
    ks = sim.endpoints.subcloud_keystone("subcloud2")
    h = auth(sim, "subcloud2")
    r = await client.post(
        f"{ks}/users",
        headers=h,
        json={"user": {"name": "alice", "password": "pw1", "email": "a@x"}},
    )
    assert r.status_code == 201
    user = r.json()["user"]
    assert user["name"] == "alice"
    assert user["email"] == "a@x"
    assert user["domain_id"] == "default"
    uid = user["id"]
    r = await client.post(f"{ks}/users", headers=h, json={"user": {"name": "alice"}})
    assert r.status_code == 409
    assert (await client.post(f"{ks}/users", headers=h, json={"user": {}})).status_code == 400
    r = await client.get(f"{ks}/users", headers=h, params={"name": "alice"})
    assert [u["id"] for u in r.json()["users"]] == [uid]
    r = await client.patch(
        f"{ks}/users/{uid}", headers=h, json={"user": {"description": "d", "enabled": False}}
    )
    assert r.status_code == 200
    assert r.json()["user"]["enabled"] is False
    assert (await client.get(f"{ks}/users/{uid}", headers=h)).json()["user"]["description"] == "d"

    change = {"user": {"password": "pw2", "original_password": "pw1"}}
    r = await client.post(f"{ks}/users/{uid}/password", headers=h, json=change)
    assert r.status_code == 401  # a disabled account cannot change its password (keystone)
    r = await client.patch(f"{ks}/users/{uid}", headers=h, json={"user": {"enabled": True}})
    assert r.status_code == 200
    r = await client.post(
        f"{ks}/users/{uid}/password",
        headers=h,
        json={"user": {"password": "pw2", "original_password": "bad"}},
    )
    assert r.status_code == 401
    r = await client.post(
        f"{ks}/users/{uid}/password",
        headers=h,
        json={"user": {"password": "pw2", "original_password": "pw1"}},
    )
    assert r.status_code == 204
    record = sim.subcloud("subcloud2").identity.users[uid]
    assert len(record["password"]) == 1
    assert record["password"][0]["self_service"] is True
    assert any(e["user_id"] == uid for e in sim.subcloud("subcloud2").identity.revocations.values())

    assert (await client.delete(f"{ks}/users/{uid}", headers=h)).status_code == 204
    r = await client.get(f"{ks}/users/{uid}", headers=h)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"Could not find user: {uid}."
    ops = [o["op"] for o in sim.subcloud("subcloud2").operations]
    assert ops == ["create_user", "update_user", "update_user", "change_password", "delete_user"]
    counters = sim.subcloud("subcloud2").counters
    assert counters is not None
    assert counters["POST keystone users"] == 3


async def test_groups_projects_roles_and_assignments(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    ks = sim.endpoints.master_keystone
    h = auth(sim)
    uid = (
        await client.post(f"{ks}/users", headers=h, json={"user": {"name": "bob", "password": "x"}})
    ).json()["user"]["id"]
    gid = (await client.post(f"{ks}/groups", headers=h, json={"group": {"name": "ops"}})).json()[
        "group"
    ]["id"]
    assert (
        await client.post(f"{ks}/groups", headers=h, json={"group": {"name": "ops"}})
    ).status_code == 409
    member = f"{ks}/groups/{gid}/users/{uid}"
    assert (await client.head(member, headers=h)).status_code == 404
    assert (await client.put(member, headers=h)).status_code == 204
    assert (await client.head(member, headers=h)).status_code == 204
    r = await client.get(f"{ks}/groups/{gid}/users", headers=h)
    assert [u["id"] for u in r.json()["users"]] == [uid]
    assert (await client.get(f"{ks}/users/{uid}/groups", headers=h)).json()["groups"][0][
        "id"
    ] == gid

    r = await client.post(f"{ks}/projects", headers=h, json={"project": {"name": "p1"}})
    assert r.status_code == 201
    pid = r.json()["project"]["id"]
    assert r.json()["project"]["parent_id"] == "default"
    r = await client.post(f"{ks}/roles", headers=h, json={"role": {"name": "operator"}})
    assert r.status_code == 201
    assert r.json()["role"]["domain_id"] is None
    rid = r.json()["role"]["id"]
    r = await client.patch(
        f"{ks}/projects/{pid}", headers=h, json={"project": {"description": "new"}}
    )
    assert r.json()["project"]["description"] == "new"
    r = await client.patch(f"{ks}/roles/{rid}", headers=h, json={"role": {"name": "operator2"}})
    assert r.json()["role"]["name"] == "operator2"
    r = await client.patch(f"{ks}/groups/{gid}", headers=h, json={"group": {"description": "g"}})
    assert r.json()["group"]["description"] == "g"

    user_grant = f"{ks}/projects/{pid}/users/{uid}/roles/{rid}"
    group_grant = f"{ks}/projects/{pid}/groups/{gid}/roles/{rid}"
    assert (await client.head(user_grant, headers=h)).status_code == 404
    assert (await client.put(user_grant, headers=h)).status_code == 204
    assert (await client.put(group_grant, headers=h)).status_code == 204
    assert (await client.head(user_grant, headers=h)).status_code == 204
    r = await client.get(f"{ks}/projects/{pid}/users/{uid}/roles", headers=h)
    assert [x["id"] for x in r.json()["roles"]] == [rid]
    r = await client.get(
        f"{ks}/role_assignments", headers=h, params={"scope.project.id": pid, "include_names": "1"}
    )
    entries = r.json()["role_assignments"]
    assert len(entries) == 2
    by_actor = {("user" if "user" in e else "group"): e for e in entries}
    assert by_actor["user"]["user"]["name"] == "bob"
    assert by_actor["group"]["scope"]["project"]["name"] == "p1"
    r = await client.get(f"{ks}/role_assignments", headers=h, params={"group.id": gid})
    assert len(r.json()["role_assignments"]) == 1
    r = await client.get(
        f"{ks}/role_assignments", headers=h, params={"role.id": rid, "user.id": uid}
    )
    assert r.json()["role_assignments"][0]["links"]["assignment"].endswith(
        f"/projects/{pid}/users/{uid}/roles/{rid}"
    )
    assert (
        await client.put(f"{ks}/projects/{pid}/users/nobody/roles/{rid}", headers=h)
    ).status_code == 404

    assert (await client.delete(user_grant, headers=h)).status_code == 204
    assert (await client.delete(user_grant, headers=h)).status_code == 404
    assert (await client.delete(member, headers=h)).status_code == 204
    for kind, oid in (("roles", rid), ("projects", pid), ("groups", gid)):
        assert (await client.delete(f"{ks}/{kind}/{oid}", headers=h)).status_code == 204
        assert (await client.get(f"{ks}/{kind}/{oid}", headers=h)).status_code == 404
    assert not any(rid in a for a in sim.master.identity.assignments)


@pytest.mark.parametrize("path", ["users", "groups", "projects", "roles"])
async def test_listings_and_bad_bodies(sim: SimCloud, client: httpx.AsyncClient, path: str) -> None:
    ks = sim.endpoints.master_keystone
    r = await client.get(f"{ks}/{path}", headers=auth(sim))
    assert r.status_code == 200
    assert isinstance(r.json()[path], list)
    r = await client.post(f"{ks}/{path}", headers=auth(sim), content=b"not json")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400
    r = await client.patch(f"{ks}/{path}/missing", headers=auth(sim), json={path[:-1]: {}})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("users", {"user": {"name": "u" * 256}}, 400),
        ("users", {"user": {"name": "ok-user", "default_project_id": 5}}, 400),
        ("users", {"user": {"name": "ok-user", "domain_id": "nowhere"}}, 404),
        ("groups", {"group": {"name": "g" * 65}}, 400),
        ("groups", {"group": {"name": "ok-group", "description": {"a": 1}}}, 400),
        ("projects", {"project": {"name": "p" * 65}}, 400),
        ("projects", {"project": {"name": "a\x00b"}}, 400),
        ("roles", {"role": {"name": "ok-role", "description": "d" * 256}}, 400),
        ("auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": "x"}}}, 400),
    ],
)
async def test_the_master_refuses_what_its_tables_cannot_hold(
    sim: SimCloud, client: httpx.AsyncClient, path: str, body: object, status: int
) -> None:
    """Found by ./just fuzz: the simulated master kept names, descriptions and ids a
    subcloud's dcdbsync then refused (so the subclouds never converged), and a malformed auth
    body crashed it. keystone refuses them: its API schemas and its columns together."""
    before = {kind: dict(table) for kind, table in sim.master.identity.tables.items()}
    r = await client.post(f"{sim.endpoints.master_keystone}/{path}", json=body, headers=auth(sim))
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert {kind: dict(table) for kind, table in sim.master.identity.tables.items()} == before
