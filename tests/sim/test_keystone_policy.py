"""The simulator decides like keystone 30's default policy (and sysinv's base rules).

The proxies relay the master's answer (docs/behaviour.md#proxy-pipeline), so these rules are
what the proxy's tests against the simulator rest on. Everything here is real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from dcorch.sim import SimCloud, open_sim_cloud

NOW = 1_750_000_000.0


class Clock:
    """The simulator's wall clock, stepped by the test (keystone's revocations are per second)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[SimCloud]:
    async with open_sim_cloud(subclouds=1, port=0, wall_clock=clock) as cloud:
        yield cloud


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def forbidden(action: str) -> dict[str, Any]:
    message = f"You are not authorized to perform the requested action: {action}."
    return {"error": {"code": 403, "message": message, "title": "Forbidden"}}


def password_auth(name: str, password: str, project: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}, "password": password}
                },
            }
        }
    }
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return body


@dataclass
class World:
    """Ids on the master and an admin's headers, made over HTTP as an operator would."""

    sim: SimCloud
    client: httpx.AsyncClient
    admin: dict[str, str]
    admin_project: str
    other_project: str
    roles: dict[str, str]
    member_id: str

    @property
    def ks(self) -> str:
        return self.sim.endpoints.master_keystone

    async def login(self, name: str, password: str, project: str | None = "admin") -> str:
        response = await self.client.post(
            f"{self.ks}/auth/tokens", json=password_auth(name, password, project)
        )
        assert response.status_code == 201, response.text
        return str(response.headers["x-subject-token"])

    async def user(self, name: str, password: str, role: str, project: str = "") -> str:
        """A new user holding ``role`` on ``project`` (the admin project by default)."""
        made = await self.client.post(
            f"{self.ks}/users",
            json={"user": {"name": name, "password": password}},
            headers=self.admin,
        )
        assert made.status_code == 201, made.text
        user_id = str(made.json()["user"]["id"])
        target = project or self.admin_project
        grant = await self.client.put(
            f"{self.ks}/projects/{target}/users/{user_id}/roles/{self.roles[role]}",
            headers=self.admin,
        )
        assert grant.status_code == 204, grant.text
        return user_id


@pytest.fixture
async def world(sim: SimCloud, client: httpx.AsyncClient) -> World:
    ks = sim.endpoints.master_keystone
    admin = {"X-Auth-Token": sim.admin_token()}
    projects = (await client.get(f"{ks}/projects", headers=admin)).json()["projects"]
    roles = (await client.get(f"{ks}/roles", headers=admin)).json()["roles"]
    made = await client.post(f"{ks}/projects", json={"project": {"name": "tenant"}}, headers=admin)
    w = World(
        sim,
        client,
        admin,
        admin_project=next(p["id"] for p in projects if p["name"] == "admin"),
        other_project=made.json()["project"]["id"],
        roles={r["name"]: r["id"] for r in roles},
        member_id="",
    )
    w.member_id = await w.user("alice", "alice-pw-1", "member")
    return w


@pytest.mark.parametrize(
    ("method", "path", "body", "action"),
    [
        ("POST", "users", {"user": {"name": "mallory"}}, "identity:create_user"),
        ("PATCH", "users/{member}", {"user": {"enabled": False}}, "identity:update_user"),
        ("DELETE", "users/{admin_user}", None, "identity:delete_user"),
        ("GET", "users", None, "identity:list_users"),
        ("GET", "users/{admin_user}", None, "identity:get_user"),
        ("GET", "users/{admin_user}/groups", None, "identity:list_groups_for_user"),
        ("POST", "groups", {"group": {"name": "g"}}, "identity:create_group"),
        ("GET", "groups", None, "identity:list_groups"),
        ("POST", "projects", {"project": {"name": "p"}}, "identity:create_project"),
        ("PATCH", "projects/{project}", {"project": {"name": "x"}}, "identity:update_project"),
        ("DELETE", "projects/{other}", None, "identity:delete_project"),
        ("GET", "projects", None, "identity:list_projects"),
        ("GET", "projects/{other}", None, "identity:get_project"),
        ("POST", "roles", {"role": {"name": "r"}}, "identity:create_role"),
        ("PATCH", "roles/{member_role}", {"role": {"name": "x"}}, "identity:update_role"),
        ("DELETE", "roles/{admin_role}", None, "identity:delete_role"),
        ("GET", "roles", None, "identity:list_roles"),
        ("GET", "roles/{admin_role}", None, "identity:get_role"),
        (
            "PUT",
            "projects/{project}/users/{member}/roles/{admin_role}",
            None,
            "identity:create_grant",
        ),
        (
            "DELETE",
            "projects/{project}/users/{member}/roles/{member_role}",
            None,
            "identity:revoke_grant",
        ),
        (
            "HEAD",
            "projects/{project}/users/{member}/roles/{member_role}",
            None,
            "identity:check_grant",
        ),
        ("GET", "projects/{project}/users/{member}/roles", None, "identity:list_grants"),
        ("GET", "role_assignments", None, "identity:list_role_assignments"),
        ("GET", "domains", None, "identity:list_domains"),
        ("GET", "OS-REVOKE/events", None, "identity:list_revoke_events"),
        ("GET", "users/no-such-user", None, "identity:get_user"),  # before the lookup
    ],
)
async def test_a_member_is_refused_what_keystone_gives_admins_only(
    world: World, method: str, path: str, body: Any, action: str
) -> None:
    identity = world.sim.master.identity
    admin_user = identity.find_name("user", "default", "admin")
    assert admin_user is not None
    url = f"{world.ks}/" + path.format(
        member=world.member_id,
        admin_user=admin_user["user"]["id"],
        project=world.admin_project,
        other=world.other_project,
        admin_role=world.roles["admin"],
        member_role=world.roles["member"],
    )
    token = await world.login("alice", "alice-pw-1")
    before = world.sim.master.operations
    response = await world.client.request(method, url, json=body, headers={"X-Auth-Token": token})
    assert response.status_code == 403
    if method != "HEAD":
        assert response.json() == forbidden(action)
    assert world.sim.master.operations == before


async def test_a_bad_body_is_a_400_before_the_policy_check(world: World) -> None:
    """Keystone validates a create's or update's body first (its schema decorators)."""
    token = {"X-Auth-Token": await world.login("alice", "alice-pw-1")}
    cases: list[tuple[str, str, Any]] = [
        ("POST", "users", None),
        ("POST", "groups", {"group": {}}),
        ("PATCH", f"users/{world.member_id}", {"x": 1}),
    ]
    for method, path, body in cases:
        response = await world.client.request(
            method, f"{world.ks}/{path}", json=body, headers=token
        )
        assert response.status_code == 400, (method, path, response.text)
    made = await world.client.post(
        f"{world.ks}/projects", json={"project": {"name": "p2"}}, headers=token
    )
    assert made.json() == forbidden("identity:create_project")


async def test_a_member_reads_what_is_their_own(world: World) -> None:
    token = {"X-Auth-Token": await world.login("alice", "alice-pw-1")}
    ks, client = world.ks, world.client
    me = await client.get(f"{ks}/users/{world.member_id}", headers=token)
    assert me.status_code == 200
    assert me.json()["user"]["name"] == "alice"
    assert (await client.get(f"{ks}/users/{world.member_id}/groups", headers=token)).json()[
        "groups"
    ] == []
    project = await client.get(f"{ks}/projects/{world.admin_project}", headers=token)
    assert project.status_code == 200
    assert project.json()["project"]["name"] == "admin"


async def test_a_manager_reads_the_roles_it_may_hand_out(world: World) -> None:
    made = await world.client.post(
        f"{world.ks}/roles", json={"role": {"name": "manager"}}, headers=world.admin
    )
    world.roles["manager"] = made.json()["role"]["id"]
    await world.user("maria", "maria-pw-1", "manager")
    token = {"X-Auth-Token": await world.login("maria", "maria-pw-1")}
    member = await world.client.get(f"{world.ks}/roles/{world.roles['member']}", headers=token)
    assert member.status_code == 200
    admin = await world.client.get(f"{world.ks}/roles/{world.roles['admin']}", headers=token)
    assert admin.json() == forbidden("identity:get_role")


async def test_admin_through_a_group_is_admin(world: World) -> None:
    ks, client, admin = world.ks, world.client, world.admin
    gid = (
        await client.post(f"{ks}/groups", json={"group": {"name": "ops"}}, headers=admin)
    ).json()["group"]["id"]
    assert (
        await client.put(f"{ks}/groups/{gid}/users/{world.member_id}", headers=admin)
    ).status_code == 204
    grant = f"{ks}/projects/{world.admin_project}/groups/{gid}/roles/{world.roles['admin']}"
    assert (await client.put(grant, headers=admin)).status_code == 204
    token = {"X-Auth-Token": await world.login("alice", "alice-pw-1")}
    made = await client.post(f"{ks}/users", json={"user": {"name": "bob"}}, headers=token)
    assert made.status_code == 201


async def test_an_unscoped_token_has_no_roles(world: World) -> None:
    token = {"X-Auth-Token": await world.login("admin", world.sim.admin.password, project=None)}
    made = await world.client.post(f"{world.ks}/users", json={"user": {"name": "x"}}, headers=token)
    assert made.json() == forbidden("identity:create_user")


async def test_self_service_password_change(world: World, clock: Clock) -> None:
    ks, client = world.ks, world.client
    url = f"{ks}/users/{world.member_id}/password"
    token = await world.login("alice", "alice-pw-1")
    change = {"user": {"password": "alice-pw-2", "original_password": "alice-pw-1"}}

    wrong = {"user": {"password": "x", "original_password": "not-it"}}
    response = await client.post(url, json=wrong, headers={"X-Auth-Token": token})
    assert response.status_code == 401  # the original password is the proof, not the token
    assert (
        response.json()["error"]["message"] == "The request you have made requires authentication."
    )
    unknown = await client.post(f"{ks}/users/no-such-user/password", json=change)
    assert unknown.status_code == 401  # not 404: no user id is confirmed
    extra = {"user": {**change["user"], "enabled": False}}
    assert (await client.post(url, json=extra)).status_code == 400
    assert world.sim.master.identity.users[world.member_id]["password"][0]["self_service"] is False

    clock.now += 5
    response = await client.post(url, json=change, headers={"X-Auth-Token": token})
    assert response.status_code == 204
    record = world.sim.master.identity.users[world.member_id]
    assert record["password"][-1]["self_service"] is True
    # keystone revokes the user's tokens with the change; a later second's token is fine
    check = {"X-Auth-Token": world.admin["X-Auth-Token"], "X-Subject-Token": token}
    assert (await client.get(f"{ks}/auth/tokens", headers=check)).status_code == 404
    clock.now += 1
    assert await world.login("alice", "alice-pw-2")
    old = await client.post(f"{ks}/auth/tokens", json=password_auth("alice", "alice-pw-1", "admin"))
    assert old.status_code == 401

    # No token at all (a user whose password expired has none), or one that is not valid:
    # keystone does not look at it.
    again = {"user": {"password": "alice-pw-3", "original_password": "alice-pw-2"}}
    assert (await client.post(url, json=again)).status_code == 204
    third = {"user": {"password": "alice-pw-4", "original_password": "alice-pw-3"}}
    garbage = {"X-Auth-Token": "gAAAAA-garbage"}
    assert (await client.post(url, json=third, headers=garbage)).status_code == 204

    # A disabled account: 401 saying so, but only to whoever knows the password.
    disabled = await client.patch(
        f"{ks}/users/{world.member_id}", json={"user": {"enabled": False}}, headers=world.admin
    )
    assert disabled.status_code == 200
    fourth = {"user": {"password": "alice-pw-5", "original_password": "alice-pw-4"}}
    refused = await client.post(url, json=fourth)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == (
        f"The account is disabled for user: {world.member_id}."
    )
    guess = await client.post(url, json={"user": {"password": "x", "original_password": "guess"}})
    assert guess.json()["error"]["message"] == "The request you have made requires authentication."


async def test_tokens_their_user_may_validate_and_revoke(world: World) -> None:
    ks, client = world.ks, world.client
    mine = await world.login("alice", "alice-pw-1")
    second = await world.login("alice", "alice-pw-1")
    admins = world.admin["X-Auth-Token"]

    def headers(caller: str, subject: str) -> dict[str, str]:
        return {"X-Auth-Token": caller, "X-Subject-Token": subject}

    assert (await client.get(f"{ks}/auth/tokens", headers=headers(mine, second))).status_code == 200
    assert (await client.head(f"{ks}/auth/tokens", headers=headers(mine, mine))).status_code == 200
    refused = await client.get(f"{ks}/auth/tokens", headers=headers(mine, admins))
    assert refused.json() == forbidden("identity:validate_token")
    head = await client.head(f"{ks}/auth/tokens", headers=headers(mine, admins))
    assert head.status_code == 403
    revoke = await client.delete(f"{ks}/auth/tokens", headers=headers(mine, admins))
    assert revoke.json() == forbidden("identity:revoke_token")
    assert (await client.get(f"{ks}/users", headers={"X-Auth-Token": admins})).status_code == 200
    missing = await client.delete(f"{ks}/auth/tokens", headers=headers(mine, "gAAAAA-nope"))
    assert missing.status_code == 404  # the subject is looked at before the policy

    # Another token of one's own, then one's own: both revoked.
    assert (
        await client.delete(f"{ks}/auth/tokens", headers=headers(mine, second))
    ).status_code == 204
    assert (
        await client.delete(f"{ks}/auth/tokens", headers=headers(mine, mine))
    ).status_code == 204
    after = await client.get(f"{ks}/auth/tokens", headers=headers(admins, mine))
    assert after.status_code == 404
    # An admin revokes anyone's.
    third = await world.login("alice", "alice-pw-1")
    assert (
        await client.delete(f"{ks}/auth/tokens", headers=headers(admins, third))
    ).status_code == 204
    audit_ids = set(world.sim.master.identity.revocations)
    assert len(audit_ids) == 3


async def test_sysinv_wants_admin_on_a_system_project_for_changes(world: World) -> None:
    sysinv, client = world.sim.endpoints.master_sysinv, world.client
    iuser = world.sim.master.platform.iuser["uuid"]
    patch = [{"op": "replace", "path": "/passwd_expiry_days", "value": 30}]
    keys = [{"id": 0, "key": "x" * 43 + "="}]
    await world.user("rita", "rita-pw-1", "reader")
    tenant_admin_id = await world.user("tess", "tess-pw-1", "admin", world.other_project)
    member = {"X-Auth-Token": await world.login("alice", "alice-pw-1")}
    reader = {"X-Auth-Token": await world.login("rita", "rita-pw-1")}
    tenant_admin = {"X-Auth-Token": await world.login("tess", "tess-pw-1", "tenant")}
    assert tenant_admin_id
    writes = [
        ("PATCH", f"{sysinv}/iuser/{iuser}", patch),
        ("PUT", f"{sysinv}/fernet_repo", keys),
    ]
    for headers in (member, reader, tenant_admin):
        for method, url, body in writes:
            response = await client.request(method, url, json=body, headers=headers)
            assert response.status_code == 403, (headers, method, url)
            assert "Access was denied" in response.json()["error_message"]
    assert world.sim.master.operations[-1]["service"] == "keystone"  # nothing changed on sysinv
    # A read wants reader on a system project: a member there has it (keystone's implied roles).
    for headers, status in ((tenant_admin, 403), (member, 200), (reader, 200), (world.admin, 200)):
        response = await client.get(f"{sysinv}/fernet_repo", headers=headers)
        assert response.status_code == status, headers
    response = await client.patch(f"{sysinv}/iuser/{iuser}", json=patch, headers=world.admin)
    assert response.status_code == 200
