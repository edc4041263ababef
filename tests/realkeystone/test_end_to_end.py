"""dcorch against real Keystones: the System Controller's and two subclouds', each with its agent.

The system (``tests/realkeystone/system.py``): three Keystone 30 instances, a DB-sync agent beside
each, dcorch with the simulator off and its subclouds registered through the v1 API. The operator
drives it with the real ``openstack`` CLI through region ``SystemController``; each change is then
checked on both subcloud Keystones through their own API.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import trio
from sqlalchemy import select

from dcorch.db.schema import orch_job
from tests.realkeystone.keystone import ADMIN_PASSWORD, openstack, openstack_run
from tests.realkeystone.system import (
    REGION,
    SUBCLOUDS,
    Clouds,
    System,
    authenticates,
    blocking,
    cli,
    eventually,
    gone,
    has,
    open_system,
    start_clouds,
    unique,
)

pytestmark = [pytest.mark.keystone, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def clouds(keystone_factory: Any) -> Clouds:
    return start_clouds(keystone_factory.create)  # the factory stops them at the session's end


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
        # The user's three requests (the initial sync's audit may queue others of its own).
        new = await system.requests_of("subcloud2", user["id"])
        assert [r["operation_type"] for r in new] == ["post", "patch", "patch"], new
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


async def test_audit_repairs_a_drifted_admin_password_through_the_keyring(clouds: Clouds) -> None:
    """The admin's password drifts below a subcloud's Keystone (its DB-sync agent writes another
    hash, so no token is revoked); the audit PATCHes the central one through Keystone (the
    keyring's path, 9e209f4e) before the agent PUT makes the record the master's."""
    async with open_system(clouds, audit_interval=10.0) as system:
        sc, drifted = "subcloud1", "drifted-Passw0rd"
        helper = await system.subcloud(
            sc,
            "POST",
            "/v3/users",
            json={"user": {"name": unique("helper"), "password": drifted}},
        )
        assert helper.status_code == 201, helper.text
        agent = f"{system.agents[sc].url}/v1.0/identity/users"
        headers = {"X-Auth-Token": system.tokens[sc]}
        helper_id = helper.json()["user"]["id"]
        rows = (await system.dc.client.get(f"{agent}/{helper_id}", headers=headers)).json()
        admin = (await system.subcloud(sc, "GET", "/v3/users?name=admin")).json()["users"][0]
        record = (await system.dc.client.get(f"{agent}/{admin['id']}", headers=headers)).json()
        record["password"] = rows["password"]  # the helper's hash: admin's password is drifted
        written = await system.dc.client.put(f"{agent}/{admin['id']}", json=record, headers=headers)
        assert written.status_code == 200, written.text
        assert [p["password_hash"] for p in written.json()["password"]] == [
            p["password_hash"] for p in rows["password"]
        ]

        await eventually(
            functools.partial(authenticates, system, sc, "admin", ADMIN_PASSWORD),
            what=f"the central admin password on {sc}",
        )
        assert not await authenticates(system, sc, "admin", drifted)

        async def repaired() -> bool:
            done = await system.requests_of(sc, admin["id"])
            return [r["state"] for r in done] == ["completed"] * 2

        await eventually(repaired, what="the keyring patch and the put completed")
        done = await system.requests_of(sc, admin["id"])
        assert [r["operation_type"] for r in done] == ["patch", "put"], done
        assert done[0]["updated_at"] <= done[1]["updated_at"]

        async def admin_revoked() -> bool:
            # A token issued in the second of the revocation is refused (Keystone keeps whole
            # seconds), so the helper's fresh token may need another try.
            reply = await system.subcloud(sc, "GET", "/v3/OS-REVOKE/events")
            events = reply.json().get("events", []) if reply.status_code == 200 else []
            return any(e.get("user_id") == admin["id"] for e in events)

        # The patch went through Keystone: it revoked the admin's tokens there.
        await eventually(admin_revoked, what=f"the admin's revocation event on {sc}")
        assert await system.requests_of("subcloud2", admin["id"]) == []
        jobs = [json.loads(r["resource_info"] or "{}") for r in await _jobs(system, admin["id"])]
        assert jobs[0] == {"central_password": True}
        assert all(ADMIN_PASSWORD not in json.dumps(info) for info in jobs)
        await system.subcloud(sc, "DELETE", f"/v3/users/{helper_id}")


async def _jobs(system: System, source: str) -> list[Any]:
    def query(conn: Any) -> list[Any]:
        statement = (
            select(orch_job.c.resource_info)
            .where(orch_job.c.source_resource_id == source)
            .order_by(orch_job.c.id)
        )
        return list(conn.execute(statement).mappings())

    return await system.dc.db.run_readonly(query)
