"""The DB-sync agent over real keystone 30 databases, checked through the real keystones' API.

A record read from the master's agent and written through the subcloud's agent must make the
subcloud's keystone (cache off) serve the object under the master's id, and its password must
authenticate there; a replace must give the subcloud's object the master's id and keep
keystone's own view consistent (assignments, memberships, default project).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.dbsync.conftest import Peer, keystone_token, new_name, open_peer, wait_a_second
from tests.realkeystone.keystone import KeystoneInstance

pytestmark = [pytest.mark.keystone, pytest.mark.timeout(300)]


async def created(peer: Peer, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create through keystone's API; the created object."""
    response = await peer.ks("POST", f"{kind}s", json={kind: body})
    assert response.status_code == 201, response.text
    obj: dict[str, Any] = response.json()[kind]
    return obj


async def copy_record(source: Peer, target: Peer, plural: str, oid: str) -> dict[str, Any]:
    record = (await source.db("GET", f"{plural}/{oid}")).json()
    response = await target.db("POST", f"{plural}/", json=record)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    return stored


async def test_a_copied_user_is_served_by_the_other_keystone_and_its_password_works(
    keystones: dict[str, KeystoneInstance],
) -> None:
    async with open_peer(keystones["master"]) as master, open_peer(keystones["subcloud"]) as sub:
        password = "Secret-" + new_name("pw")
        user = await created(master, "user", {"name": new_name("alice"), "password": password})
        project = await created(
            master, "project", {"name": new_name("proj"), "domain_id": "default"}
        )
        role = await created(master, "role", {"name": new_name("role")})
        group = await created(master, "group", {"name": new_name("grp"), "domain_id": "default"})
        assert (
            await master.ks("PUT", f"groups/{group['id']}/users/{user['id']}")
        ).status_code == 204

        stored = await copy_record(master, sub, "users", user["id"])
        source = (await master.db("GET", f"users/{user['id']}")).json()
        assert stored["user"] == source["user"]
        assert [p["password_hash"] for p in stored["password"]] == [
            p["password_hash"] for p in source["password"]
        ]
        for plural, obj in (("projects", project), ("roles", role), ("groups", group)):
            await copy_record(master, sub, plural, obj["id"])

        shown = await sub.ks("GET", f"users/{user['id']}")
        assert shown.status_code == 200
        assert shown.json()["user"]["name"] == user["name"]
        assert (await sub.ks("GET", f"projects/{project['id']}")).json()["project"]["name"] == (
            project["name"]
        )
        assert (await sub.ks("GET", f"roles/{role['id']}")).status_code == 200
        members = (await sub.ks("GET", f"groups/{group['id']}/users")).json()["users"]
        assert [m["id"] for m in members] == [user["id"]]
        # the copied ids work with the subcloud's own API: grant, then log in with the password
        grant = f"projects/{project['id']}/users/{user['id']}/roles/{role['id']}"
        assert (await sub.ks("PUT", grant)).status_code == 204
        login = await keystone_token(
            sub.http, sub.keystone.auth_url, user["name"], password, project["name"]
        )
        assert login.status_code == 201, login.text
        assert login.json()["token"]["user"]["id"] == user["id"]
        assert [r["id"] for r in login.json()["token"]["roles"]] == [role["id"]]
        wrong = await keystone_token(sub.http, sub.keystone.auth_url, user["name"], "nope", None)
        assert wrong.status_code == 401


async def test_replace_gives_the_subcloud_object_the_master_id_and_keystone_follows(
    keystones: dict[str, KeystoneInstance],
) -> None:
    """Same names on both sides, different ids (what the initial sync reconciles)."""
    async with open_peer(keystones["master"]) as master, open_peer(keystones["subcloud"]) as sub:
        names = {k: new_name(k) for k in ("proj", "role", "user", "grp")}
        password = "Master-" + new_name("pw")
        ids: dict[str, dict[str, str]] = {}
        for side, peer, pw in ((master, master, password), (sub, sub, "subcloud-pw")):
            project = await created(
                peer, "project", {"name": names["proj"], "domain_id": "default"}
            )
            role = await created(peer, "role", {"name": names["role"]})
            user = await created(
                peer,
                "user",
                {"name": names["user"], "password": pw, "default_project_id": project["id"]},
            )
            group = await created(peer, "group", {"name": names["grp"], "domain_id": "default"})
            await peer.ks("PUT", f"groups/{group['id']}/users/{user['id']}")
            await peer.ks("PUT", f"projects/{project['id']}/users/{user['id']}/roles/{role['id']}")
            await peer.ks(
                "PUT", f"projects/{project['id']}/groups/{group['id']}/roles/{role['id']}"
            )
            ids["master" if side is master else "sub"] = {
                "projects": project["id"],
                "roles": role["id"],
                "users": user["id"],
                "groups": group["id"],
            }
        m, s = ids["master"], ids["sub"]
        assert all(m[k] != s[k] for k in m)
        for plural in ("projects", "roles", "users", "groups"):
            record = (await master.db("GET", f"{plural}/{m[plural]}")).json()
            response = await sub.db("PUT", f"{plural}/{s[plural]}", json=record)
            assert response.status_code == 200, response.text
            assert response.json() == {
                **record,
                **_per_cloud_ids(response.json(), record),
            }
            assert (await sub.db("GET", f"{plural}/{s[plural]}")).status_code == 404
            assert (await sub.ks("GET", f"{plural}/{s[plural]}")).status_code == 404
            assert (await sub.ks("GET", f"{plural}/{m[plural]}")).status_code == 200

        user = (await sub.ks("GET", f"users/{m['users']}")).json()["user"]
        assert (user["name"], user["default_project_id"]) == (names["user"], m["projects"])
        members = (await sub.ks("GET", f"groups/{m['groups']}/users")).json()["users"]
        assert [u["id"] for u in members] == [m["users"]]
        listed = (
            await sub.ks("GET", "role_assignments", params={"scope.project.id": m["projects"]})
        ).json()["role_assignments"]
        actors = sorted(
            (("user", a["user"]["id"]) if "user" in a else ("group", a["group"]["id"]))
            + (a["role"]["id"],)
            for a in listed
        )
        assert actors == sorted(
            [("user", m["users"], m["roles"]), ("group", m["groups"], m["roles"])]
        )
        await wait_a_second()
        login = await keystone_token(
            sub.http, sub.keystone.auth_url, names["user"], password, names["proj"]
        )
        assert login.status_code == 201, login.text
        token = login.json()["token"]
        assert (token["user"]["id"], token["project"]["id"]) == (m["users"], m["projects"])


def _per_cloud_ids(stored: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The subcloud's own autoincrement ids in a stored user record (everything else is the
    master's)."""
    if "local_user" not in record:
        return {}
    local_id = stored["local_user"]["id"]
    return {
        "local_user": {**record["local_user"], "id": local_id},
        "password": [
            {**p, "id": q["id"], "local_user_id": local_id}
            for p, q in zip(record["password"], stored["password"], strict=True)
        ],
    }


async def test_tokens_are_checked_by_the_keystone_beside_the_agent(
    keystones: dict[str, KeystoneInstance],
) -> None:
    async with open_peer(keystones["subcloud"]) as sub, open_peer(keystones["master"]) as master:
        name, password = new_name("member"), "Member-" + new_name("pw")
        member = await created(sub, "user", {"name": name, "password": password})
        roles = (await sub.ks("GET", "roles", params={"name": "member"})).json()["roles"]
        admin_project = (await sub.ks("GET", "projects", params={"name": "admin"})).json()
        project_id = admin_project["projects"][0]["id"]
        grant = f"projects/{project_id}/users/{member['id']}/roles/{roles[0]['id']}"
        assert (await sub.ks("PUT", grant)).status_code == 204
        login = await keystone_token(sub.http, sub.keystone.auth_url, name, password)
        member_token = login.headers["X-Subject-Token"]

        url = f"{sub.dbsync}/users/"
        for headers, status in (
            ({}, 401),
            ({"X-Auth-Token": "not-a-token"}, 401),
            ({"X-Auth-Token": master.token}, 401),  # another keystone's token
            ({"X-Auth-Token": member_token}, 403),
        ):
            for method, body in (("GET", None), ("POST", {"user": {}, "local_user": {}})):
                answer = await sub.http.request(method, url, headers=headers, json=body)
                assert answer.status_code == status
                error = answer.json()["error"]
                assert error["code"] == status
                assert error["title"] == {401: "Unauthorized", 403: "Forbidden"}[status]
        assert (await sub.db("GET", "users/")).status_code == 200
