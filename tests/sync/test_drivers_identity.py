"""The identity driver against the simulated subcloud over HTTP, with SQLite.

What the driver does: docs/behaviour.md#identity-driver.

Every object is created on the master's keystone first (that is where the driver reads the
record), then the request is queued through the real enqueue and applied with the real driver.
Each handler is also applied twice: idempotency (twice == once) is what makes re-running
everything still pending after a crash safe.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from dcorch import constants as c
from dcorch.remote.clients import singular
from dcorch.remote.errors import PermanentSyncError
from dcorch.sync import audit_rules as rules
from dcorch.sync.drivers import apply_request
from dcorch.sync.noop import NoOp, NoOpReason

from .conftest import DriverRig

KINDS = ("users", "groups", "projects", "roles")


async def master_object(rig: DriverRig, kind: str, name: str, **extra: Any) -> str:
    body: dict[str, Any] = {"name": name, **extra}
    if kind == "users":
        body.setdefault("password", "pw-" + name)
    if kind != "roles":
        body.setdefault("domain_id", "default")
    response = await rig.master_call("POST", kind, json={singular(kind): body})
    return str(response.json()[singular(kind)]["id"])


async def subcloud_object(rig: DriverRig, kind: str, name: str) -> str:
    """An object created directly on the subcloud (its own id)."""
    body: dict[str, Any] = {"name": name}
    if kind == "users":
        body["password"] = "local"
    if kind != "roles":
        body["domain_id"] = "default"
    url = f"{rig.sim.endpoints.subcloud_keystone(rig.region)}/{kind}"
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url,
            json={singular(kind): body},
            headers={"X-Auth-Token": rig.sim.admin_token(rig.region)},
        )
    response.raise_for_status()
    return str(response.json()[singular(kind)]["id"])


def table(rig: DriverRig, kind: str) -> dict[str, Any]:
    return dict(rig.cloud.identity.tables[singular(kind)])


def same_as_master(rig: DriverRig, kind: str, oid: str) -> bool:
    master = rig.sim.master.identity.tables[singular(kind)][oid]
    sub = rig.cloud.identity.tables[singular(kind)].get(oid)
    return sub is not None and rules.same_record(kind, master, sub)


# post / put / patch / delete of users, groups, projects, roles -----------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_post_replicates_the_master_record_with_its_id(rig: DriverRig, kind: str) -> None:
    oid = await master_object(rig, kind, f"new-{kind}")
    await rig.apply(kind, oid, c.OPERATION_POST)
    assert same_as_master(rig, kind, oid)
    assert await rig.mapped(kind, oid) == oid
    once = table(rig, kind)
    await rig.apply(kind, oid, c.OPERATION_POST)  # a replayed create converges, no duplicate
    assert table(rig, kind) == once
    assert await rig.mapped(kind, oid) == oid


@pytest.mark.parametrize("kind", KINDS)
async def test_post_without_master_record_or_source_id_fails_permanently(
    rig: DriverRig, kind: str
) -> None:
    before = table(rig, kind)
    with pytest.raises(PermanentSyncError, match="master has no"):
        await rig.apply(kind, "no-such-id", c.OPERATION_POST)
    with pytest.raises(PermanentSyncError, match="without a source id"):
        await rig.apply(kind, "", c.OPERATION_CREATE)
    assert table(rig, kind) == before
    assert await rig.mapped(kind, "no-such-id") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_put_overwrites_the_subcloud_object_named_in_resource_info(
    rig: DriverRig, kind: str
) -> None:
    local = await subcloud_object(rig, kind, f"same-{kind}")
    oid = await master_object(rig, kind, f"same-{kind}")
    assert local != oid
    info = {singular(kind): {"id": local}}
    await rig.apply(kind, oid, c.OPERATION_PUT, info)
    assert local not in table(rig, kind)
    assert same_as_master(rig, kind, oid)
    assert await rig.mapped(kind, oid) == oid
    once = table(rig, kind)
    await rig.apply(kind, oid, c.OPERATION_PUT, info)  # the old id is gone: recreated as is
    assert table(rig, kind) == once


@pytest.mark.parametrize("kind", KINDS)
async def test_put_needs_the_subcloud_id_and_the_master_record(rig: DriverRig, kind: str) -> None:
    oid = await master_object(rig, kind, f"put-{kind}")
    with pytest.raises(PermanentSyncError, match="subcloud's id"):
        await rig.apply(kind, oid, c.OPERATION_PUT, {})
    with pytest.raises(PermanentSyncError, match="master has no"):
        await rig.apply(kind, "missing", c.OPERATION_PUT, {"id": oid})
    assert oid not in table(rig, kind)


@pytest.mark.parametrize("kind", KINDS)
async def test_patch_sends_only_the_given_fields_through_keystone(
    rig: DriverRig, kind: str
) -> None:
    oid = await master_object(rig, kind, f"patch-{kind}")
    await rig.apply(kind, oid, c.OPERATION_POST)
    change = {singular(kind): {"name": f"renamed-{kind}", "not_a_field": 1}}
    for _ in range(2):
        await rig.apply(kind, oid, c.OPERATION_PATCH, change)
    record = table(rig, kind)[oid]
    assert rules.name_key(kind, record)[1] == f"renamed-{kind}"
    updates = [o for o in rig.cloud.operations if o["op"] == f"update_{singular(kind)}"]
    assert [u["fields"] for u in updates] == [["name"], ["name"]]


@pytest.mark.parametrize("kind", KINDS)
async def test_patch_without_mapping_succeeds_as_a_no_op_saying_why(
    rig: DriverRig, kind: str
) -> None:
    answer = await rig.applied(kind, "unmapped", c.OPERATION_PATCH, {singular(kind): {"n": 1}})
    assert answer == NoOp(NoOpReason.NO_MAPPING)
    assert rig.ops("keystone") == []


async def test_patch_of_no_keystone_field_is_a_no_op_saying_why(rig: DriverRig) -> None:
    oid = await master_object(rig, "users", "fieldless")
    assert await rig.applied("users", oid, c.OPERATION_POST) is None
    answer = await rig.applied("users", oid, c.OPERATION_PATCH, {"user": {"not_a_field": 1}})
    assert answer == NoOp(NoOpReason.NOTHING_TO_PATCH)
    assert rig.ops("keystone") == []


@pytest.mark.parametrize("kind", KINDS)
async def test_patch_with_empty_resource_info_fails_permanently(rig: DriverRig, kind: str) -> None:
    oid = await master_object(rig, kind, f"empty-{kind}")
    await rig.apply(kind, oid, c.OPERATION_POST)
    with pytest.raises(PermanentSyncError, match="empty resource_info"):
        await rig.apply(kind, oid, c.OPERATION_PATCH, {})


@pytest.mark.parametrize("kind", KINDS)
async def test_delete_removes_object_and_mapping_and_tolerates_repeats(
    rig: DriverRig, kind: str
) -> None:
    oid = await master_object(rig, kind, f"del-{kind}")
    await rig.apply(kind, oid, c.OPERATION_POST)
    await rig.apply(kind, oid, c.OPERATION_DELETE)
    assert oid not in table(rig, kind)
    assert await rig.mapped(kind, oid) is None
    await rig.apply(kind, oid, c.OPERATION_DELETE)  # no mapping, object gone: success
    assert [o["op"] for o in rig.cloud.operations].count(f"delete_{singular(kind)}") == 1
    again = await rig.applied(kind, oid, c.OPERATION_DELETE)
    assert again == NoOp(NoOpReason.NO_MAPPING)  # nothing changed anywhere: said so


async def test_delete_without_mapping_of_an_adopted_replica_is_a_real_change(
    rig: DriverRig,
) -> None:
    """Unmapped, but the subcloud has the master's id (mapping lost): deleted, not a no-op."""
    oid = await master_object(rig, "users", "lost-mapping")
    await rig.apply("users", oid, c.OPERATION_POST)
    await rig.db.delete_subcloud_resource(rig.region, "users", oid)
    assert await rig.applied("users", oid, c.OPERATION_DELETE) is None
    assert oid not in table(rig, "users")


@pytest.mark.parametrize("op", [c.OPERATION_POST, c.OPERATION_CREATE, c.OPERATION_PUT])
async def test_create_of_an_object_the_master_deleted_is_superseded_by_a_later_delete(
    rig: DriverRig, op: str
) -> None:
    oid = await master_object(rig, "users", f"gone-{op}")
    info = {"user": {"id": oid}}
    create = await rig.request("users", oid, op, info)
    await rig.master_call("DELETE", f"users/{oid}")
    ctx = await rig.context()
    with pytest.raises(PermanentSyncError, match="master has no"):  # no later delete yet
        await apply_request(ctx, create)
    await rig.request("users", oid, c.OPERATION_DELETE)
    assert await apply_request(ctx, create) == NoOp(NoOpReason.SUPERSEDED)
    assert oid not in table(rig, "users")
    assert await rig.mapped("users", oid) is None
    assert [o for o in rig.ops() if o.startswith("create") or o.startswith("replace")] == []


async def test_a_later_delete_does_not_retire_a_create_the_master_still_has(
    rig: DriverRig,
) -> None:
    """Only the master's answer decides: a queued delete alone never skips a create."""
    oid = await master_object(rig, "users", "still-there")
    create = await rig.request("users", oid, c.OPERATION_POST)
    await rig.request("users", oid, c.OPERATION_DELETE)
    assert await apply_request(await rig.context(), create) is None
    assert same_as_master(rig, "users", oid)


async def test_a_delete_recorded_before_the_create_does_not_supersede_it(
    rig: DriverRig,
) -> None:
    oid = await master_object(rig, "users", "recreated")
    await rig.request("users", oid, c.OPERATION_DELETE)
    create = await rig.request("users", oid, c.OPERATION_POST)
    await rig.master_call("DELETE", f"users/{oid}")
    with pytest.raises(PermanentSyncError, match="master has no"):
        await apply_request(await rig.context(), create)


async def test_delete_when_the_subcloud_lost_the_object_still_drops_the_mapping(
    rig: DriverRig,
) -> None:
    oid = await master_object(rig, "users", "vanished")
    await rig.apply("users", oid, c.OPERATION_POST)
    rig.cloud.identity.remove("user", oid)
    await rig.apply("users", oid, c.OPERATION_DELETE)
    assert await rig.mapped("users", oid) is None


# project role assignments ------------------------------------------------------------------------


async def replicated(rig: DriverRig, kind: str, name: str) -> str:
    oid = await master_object(rig, kind, name)
    await rig.apply(kind, oid, c.OPERATION_POST)
    return oid


def assignments(rig: DriverRig) -> set[tuple[str, str, str, str]]:
    return set(rig.cloud.identity.assignments)


@pytest.mark.parametrize("actor_kind", ["users", "groups"])
async def test_assignment_post_and_delete_for_user_and_group_actors(
    rig: DriverRig, actor_kind: str
) -> None:
    project = await replicated(rig, "projects", "p1")
    actor = await replicated(rig, actor_kind, "a1")
    role = await replicated(rig, "roles", "r1")
    aid = f"{project}_{actor}_{role}"
    wanted = (project, singular(actor_kind), actor, role)
    for _ in range(2):
        await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid, c.OPERATION_POST)
    assert wanted in assignments(rig)
    assert await rig.mapped(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid) == aid
    await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid, c.OPERATION_PUT)  # no-op
    assert wanted in assignments(rig)
    for _ in range(2):
        await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid, c.OPERATION_DELETE)
    assert wanted not in assignments(rig)
    assert await rig.mapped(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid) is None


@pytest.mark.parametrize("missing", ["role", "project", "actor"])
async def test_assignment_post_with_a_missing_part_fails_permanently(
    rig: DriverRig, missing: str
) -> None:
    project = await replicated(rig, "projects", "p2")
    user = await replicated(rig, "users", "u2")
    role = await replicated(rig, "roles", "r2")
    parts = {"project": project, "actor": user, "role": role, missing: "absent"}
    aid = f"{parts['project']}_{parts['actor']}_{parts['role']}"
    before = assignments(rig)
    with pytest.raises(PermanentSyncError, match=f"{missing} absent missing"):
        await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid, c.OPERATION_POST)
    assert assignments(rig) == before
    assert await rig.mapped(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid) is None


@pytest.mark.parametrize("aid", ["p_u", "p__r", "a_b_c_d"])
async def test_assignment_post_with_a_malformed_id_fails_permanently(
    rig: DriverRig, aid: str
) -> None:
    with pytest.raises(PermanentSyncError, match="malformed role assignment id"):
        await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, aid, c.OPERATION_POST)


async def test_assignment_delete_with_a_malformed_mapping_drops_the_mapping(
    rig: DriverRig,
) -> None:
    await rig.db.upsert_subcloud_resource(
        rig.region, c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, "p_u_r", "garbage"
    )
    await rig.apply(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, "p_u_r", c.OPERATION_DELETE)
    assert await rig.mapped(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, "p_u_r") is None
    assert rig.ops("keystone") == []


# revocation events -------------------------------------------------------------------------------


async def master_event(rig: DriverRig, audit_id: str) -> None:
    # keystone's revocation_event.revoked_at is NOT NULL: the DB-sync contract requires it
    event = {
        "audit_id": audit_id,
        "issued_before": "2026-01-01T00:00:00",
        "revoked_at": "2026-01-01T00:00:00",
    }
    await rig.master.create_revoke_event(event)


def events(rig: DriverRig) -> set[str]:
    return set(rig.cloud.identity.revocations)


async def test_revoke_event_post_and_delete_by_audit_id(rig: DriverRig) -> None:
    await master_event(rig, "audit-1")
    info = {"token_revoke_event": {"audit_id": "audit-1"}}
    for _ in range(2):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS, "audit-1", c.OPERATION_POST, info)
    assert events(rig) == {"audit-1"}
    assert await rig.mapped(c.RESOURCE_REVOKE_EVENTS, "audit-1") == "audit-1"
    for _ in range(2):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS, "audit-1", c.OPERATION_DELETE)
    assert events(rig) == set()
    assert await rig.mapped(c.RESOURCE_REVOKE_EVENTS, "audit-1") is None


async def test_revoke_event_post_needs_an_audit_id_and_the_master_event(rig: DriverRig) -> None:
    with pytest.raises(PermanentSyncError, match="without an audit id"):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS, "x", c.OPERATION_POST, {})
    info = {"token_revoke_event": {"audit_id": "nowhere"}}
    with pytest.raises(PermanentSyncError, match="master has no revocation event"):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS, "nowhere", c.OPERATION_POST, info)
    assert events(rig) == set()


async def test_revoke_events_for_user_post_and_delete(rig: DriverRig) -> None:
    uid = await replicated(rig, "users", "revoked")
    await rig.master_call("PATCH", f"users/{uid}", json={"user": {"enabled": False}})
    [(key, event)] = [
        (k, e) for k, e in rig.sim.master.identity.revocations.items() if e.get("user_id") == uid
    ]
    raw = f"{uid}_{event['issued_before']}".encode()
    assert key == base64.urlsafe_b64encode(raw).decode()
    for _ in range(2):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS_FOR_USER, key, c.OPERATION_POST)
    assert events(rig) == {key}
    assert await rig.mapped(c.RESOURCE_REVOKE_EVENTS_FOR_USER, key) == key
    for _ in range(2):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS_FOR_USER, key, c.OPERATION_DELETE)
    assert events(rig) == set()


async def test_unknown_identity_operation_fails_permanently(rig: DriverRig) -> None:
    with pytest.raises(PermanentSyncError, match="no identity handler"):
        await rig.apply(c.RESOURCE_REVOKE_EVENTS, "a", c.OPERATION_PATCH, json.dumps({}))
