"""Authorization parity through the assembled system: the master's policy decides, not the proxy.

A non-admin user made through the proxy, as an operator would, then acting as themself: what
keystone (sysinv) refuses comes back byte for byte and records nothing; what keystone lets
them do (their own password, their own token) is recorded and reaches every subcloud. Real HTTP
against the harness (docs/behaviour.md#proxy-pipeline); the simulated master enforces keystone's
default policy (dcorch.sim.keystone_policy).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from sqlalchemy import Connection, func, select

from dcorch.db.schema import orch_job, orch_request, resource
from dcorch.harness import Dcorch, open_dcorch
from tests.conftest import harness_settings

pytestmark = pytest.mark.slow

PASSWORD = "alice-pw-1"
NEW_PASSWORD = "alice-pw-2"


def _counts(conn: Connection) -> tuple[int, ...]:
    """orch_job, orch_request and resource rows (soft-deleted ones too)."""
    return tuple(
        int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in (orch_job, orch_request, resource)
    )


def _jobs(conn: Connection) -> list[tuple[str, str, str, Any]]:
    rows = conn.execute(
        select(
            resource.c.resource_type,
            orch_job.c.operation_type,
            orch_job.c.source_resource_id,
            orch_job.c.resource_info,
        )
        .join(resource, resource.c.id == orch_job.c.resource_id)
        .order_by(orch_job.c.id)
    )
    return [(r[0], r[1], r[2], json.loads(r[3] or "null")) for r in rows]


def _requests_of_last_job(conn: Connection) -> dict[str, str]:
    """``{target region: state}`` of the newest job's requests."""
    last = conn.execute(select(func.max(orch_job.c.id))).scalar_one()
    rows = conn.execute(
        select(orch_request.c.target_region_name, orch_request.c.state).where(
            orch_request.c.orch_job_id == last
        )
    )
    return {r[0]: r[1] for r in rows}


def _login_body(password: str) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "alice", "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": "tenant", "domain": {"id": "default"}}},
        }
    }


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll real state (the engine runs on real sockets) for up to 30 s."""
    deadline = trio.current_time() + 30.0
    while True:
        if await condition():
            return
        if trio.current_time() >= deadline:
            raise AssertionError(f"not within 30 s: {what}")
        await trio.sleep(0.05)


async def _revoked_everywhere(dc: Dcorch, audit_id: str) -> bool:
    assert dc.sim is not None
    return all(audit_id in dc.sim.subcloud(r).identity.revocations for r in dc.sim.regions)


@pytest.fixture
async def dc() -> AsyncIterator[Dcorch]:
    settings = harness_settings(subclouds=2, engine={"audit_interval": 2.0})
    async with open_dcorch(settings, ephemeral_ports=True) as handle:
        await handle.wait_converged(timeout=30)
        yield handle


async def _make_member(dc: Dcorch) -> str:
    """Through the proxy as admin: a project, a user with the member role on it."""
    ks, admin = dc.identity_url + "/v3", dc.auth
    project = await dc.client.post(
        f"{ks}/projects", json={"project": {"name": "tenant"}}, headers=admin
    )
    assert project.status_code == 201, project.text
    user = await dc.client.post(
        f"{ks}/users", json={"user": {"name": "alice", "password": PASSWORD}}, headers=admin
    )
    assert user.status_code == 201, user.text
    roles = (await dc.client.get(f"{ks}/roles", params={"name": "member"}, headers=admin)).json()
    [member] = roles["roles"]
    project_id, user_id = project.json()["project"]["id"], user.json()["user"]["id"]
    granted = await dc.client.put(
        f"{ks}/projects/{project_id}/users/{user_id}/roles/{member['id']}", headers=admin
    )
    assert granted.status_code == 204, granted.text
    return str(user_id)


async def _login(dc: Dcorch, password: str, keystone: str | None = None) -> tuple[str, str]:
    """A token of alice's (and its audit id), issued by the master keystone unless told."""
    response = await dc.client.post(
        f"{keystone or dc.master.keystone}/auth/tokens", json=_login_body(password)
    )
    assert response.status_code == 201, response.text
    return response.headers["X-Subject-Token"], response.json()["token"]["audit_ids"][0]


async def test_the_masters_policy_decides_and_self_service_is_synced(dc: Dcorch) -> None:
    assert dc.sim is not None
    sim, regions = dc.sim, dc.sim.regions
    alice_id = await _make_member(dc)
    await dc.wait_converged(timeout=30)
    token, _ = await _login(dc, PASSWORD)
    alice = {"X-Auth-Token": token}
    before = await dc.db.run(_counts)

    # Refused by keystone's and sysinv's own policy: their answer, unchanged; nothing recorded.
    create = {"user": {"name": "mallory", "password": "mallory-pw-1"}}
    proxied = await dc.client.post(f"{dc.identity_url}/v3/users", json=create, headers=alice)
    direct = await dc.client.post(f"{dc.master.keystone}/users", json=create, headers=alice)
    assert proxied.status_code == direct.status_code == 403
    assert proxied.content == direct.content
    assert proxied.json() == {
        "error": {
            "code": 403,
            "message": "You are not authorized to perform the requested action: "
            "identity:create_user.",
            "title": "Forbidden",
        }
    }
    iuser = sim.master.platform.iuser["uuid"]
    patch = [{"op": "replace", "path": "/passwd_expiry_days", "value": 1}]
    proxied = await dc.client.patch(
        f"{dc.platform_url}/v1/iuser/{iuser}", json=patch, headers=alice
    )
    direct = await dc.client.patch(f"{dc.master.sysinv}/iuser/{iuser}", json=patch, headers=alice)
    assert proxied.status_code == direct.status_code == 403
    assert proxied.content == direct.content
    assert "Access was denied" in proxied.json()["error_message"]

    # Bad tokens: the proxies' own 401, in the shape each endpoint's clients parse.
    for headers in ({}, {"X-Auth-Token": "gAAAAA-not-a-token"}):
        refused = await dc.client.post(f"{dc.identity_url}/v3/users", json=create, headers=headers)
        assert refused.status_code == 401
        assert set(refused.json()["error"]) == {"code", "title", "message"}
        assert refused.json()["error"]["code"] == 401
        refused = await dc.client.patch(
            f"{dc.platform_url}/v1/iuser/{iuser}", json=patch, headers=headers
        )
        assert refused.status_code == 401
        assert json.loads(refused.json()["error_message"])["faultcode"] == "Client"
    assert await dc.db.run(_counts) == before
    assert sim.master.identity.find_name("user", "default", "mallory") is None

    # Changing one's own password: keystone says yes, so it is recorded and synced.
    change = {"user": {"password": NEW_PASSWORD, "original_password": PASSWORD}}
    changed = await dc.client.post(
        f"{dc.identity_url}/v3/users/{alice_id}/password", json=change, headers=alice
    )
    assert changed.status_code == 204, changed.text
    jobs = await dc.db.run(_jobs)
    assert jobs[-1] == ("users", "patch", alice_id, change)
    assert sorted(await dc.db.run(_requests_of_last_job)) == sorted(regions)

    async def applied() -> bool:
        return set((await dc.db.run(_requests_of_last_job)).values()) == {"completed"}

    await _until(applied, "the password change applied on every subcloud")
    for region in regions:
        keystone = sim.endpoints.subcloud_keystone(region)
        await _login(dc, NEW_PASSWORD, keystone)
        old = await dc.client.post(f"{keystone}/auth/tokens", json=_login_body(PASSWORD))
        assert old.status_code == 401, region
    # The rest (the master's hash, its per-user revocation event) is the audit's to copy
    # (docs/behaviour.md#audit), every few seconds here. Each subcloud's keystone also made a
    # revocation event of its own when the new password landed; dcorch leaves those alone, so
    # revocation events are compared below, by the master's.
    await sim.wait_converged(timeout=30, ignore=["revoke_events"])
    [master_event] = [
        e for e in sim.master.identity.revocations.values() if e.get("user_id") == alice_id
    ]

    async def copied() -> bool:
        return all(
            master_event
            in [
                {**e, "id": master_event["id"]}
                for e in sim.subcloud(r).identity.revocations.values()
            ]
            for r in regions
        )

    await _until(copied, "the master's per-user revocation event on every subcloud")

    # Revoking one's own token: recorded by audit id, refused at the proxy at once, synced.
    own, audit_id = await _login(dc, NEW_PASSWORD)
    mine = {"X-Auth-Token": own, "X-Subject-Token": own}
    for region in regions:  # single sign-on: same ids and fernet keys on every cloud
        check = await dc.client.get(
            f"{sim.endpoints.subcloud_keystone(region)}/auth/tokens", headers=mine
        )
        assert check.status_code == 200, region
    revoked = await dc.client.delete(f"{dc.identity_url}/v3/auth/tokens", headers=mine)
    assert revoked.status_code == 204, revoked.text
    assert (await dc.db.run(_jobs))[-1] == (
        "revoke_events",
        "post",
        audit_id,
        {"token_revoke_event": {"audit_id": audit_id}},
    )
    me = f"{dc.identity_url}/v3/users/{alice_id}"
    assert (await dc.client.get(me, headers={"X-Auth-Token": own})).status_code == 401
    await _until(partial(_revoked_everywhere, dc, audit_id), "the revocation synced")
    for region in regions:
        check = await dc.client.get(
            f"{sim.endpoints.subcloud_keystone(region)}/auth/tokens", headers=mine
        )
        assert check.status_code == 401, region

    # An admin revoking someone's token goes through the same way.
    other, other_audit = await _login(dc, NEW_PASSWORD)
    assert (await dc.client.get(me, headers={"X-Auth-Token": other})).status_code == 200
    revoked = await dc.client.delete(
        f"{dc.identity_url}/v3/auth/tokens", headers={**dc.auth, "X-Subject-Token": other}
    )
    assert revoked.status_code == 204, revoked.text
    assert (await dc.db.run(_jobs))[-1][:3] == ("revoke_events", "post", other_audit)
    assert (await dc.client.get(me, headers={"X-Auth-Token": other})).status_code == 401
    await _until(partial(_revoked_everywhere, dc, other_audit), "the admin's revocation synced")
