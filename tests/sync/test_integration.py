"""The engine end to end: simulator + database + dispatcher + sync manager in one process."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import trio

from dcorch import constants as c
from dcorch.db.rows import PendingRequest, RequestUpdate
from dcorch.remote.errors import PermanentSyncError
from dcorch.sim.records import password_row
from dcorch.sim.tokens import hash_password
from dcorch.sync import audit_rules as rules
from dcorch.sync.audit import AuditResult, PairAudit
from dcorch.sync.drivers import apply_request
from dcorch.sync.drivers.identity import CENTRAL_PASSWORD
from dcorch.work import WorkOrder

from .conftest import ENGINE, DriverRig, Engine, wait_until


def user_order(user_id: str, op: str = c.OPERATION_POST, info: object = None) -> WorkOrder:
    return WorkOrder(
        endpoint_type=c.ENDPOINT_TYPE_IDENTITY,
        resource_type=c.RESOURCE_USERS,
        source_resource_id=user_id,
        operation_type=op,
        resource_info=json.dumps(info or {}),
    )


async def create_master_user(engine: Engine, name: str) -> str:
    body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
    response = await engine.master_call("POST", "users", json=body)
    return str(response.json()["user"]["id"])


async def test_work_order_reaches_every_eligible_subcloud(start_engine) -> None:
    engine: Engine = await start_engine()
    regions = engine.sim.regions
    await engine.manage(*regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*regions)
    uid = await create_master_user(engine, "alice")
    [result] = await engine.db.enqueue_work([user_order(uid)])
    assert sorted(result.target_regions) == sorted(regions)
    with trio.fail_after(20):
        await engine.sim.wait_converged(regions, timeout=20)
    for region in regions:
        assert uid in engine.sim.subcloud(region).identity.users


async def converge(engine: Engine, seconds: float = 20) -> None:
    with trio.fail_after(seconds + 5):
        await engine.sim.wait_converged(engine.sim.regions, timeout=seconds)


async def started(start_engine, **settings: Any) -> Engine:
    engine: Engine = await start_engine(settings=dataclasses.replace(ENGINE, **settings))
    await engine.manage(*engine.sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*engine.sim.regions)
    return engine


async def test_burst_of_changes_to_one_user_applied_in_order(start_engine) -> None:
    engine = await started(start_engine)
    uid = await create_master_user(engine, "bob")
    await engine.db.enqueue_work([user_order(uid)])
    for i in range(5):
        body = {"user": {"description": f"d{i}"}}
        await engine.master_call("PATCH", f"users/{uid}", json=body)
        await engine.db.enqueue_work([user_order(uid, c.OPERATION_PATCH, body)])
    await converge(engine)
    for region in engine.sim.regions:
        user = engine.sim.subcloud(region).identity.users[uid]
        assert json.loads(user["user"]["extra"]).get("description", "d4") == "d4"
    await engine.master_call("DELETE", f"users/{uid}")
    await engine.db.enqueue_work([user_order(uid, c.OPERATION_DELETE)])
    await converge(engine)
    assert all(uid not in engine.sim.subcloud(r).identity.users for r in engine.sim.regions)
    with trio.fail_after(10):
        await engine.wait_idle()


async def test_offline_subcloud_catches_up_in_order_after_recovery(start_engine) -> None:
    engine = await started(start_engine, offline_retry_interval=0.2)
    down = engine.sim.regions[0]
    engine.sim.set_faults(down, offline=True)
    uids = [await create_master_user(engine, f"u{i}") for i in range(3)]
    for uid in uids:
        await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions[1:], timeout=20)
    pending = await engine.db.pending_requests(down, c.ENDPOINT_TYPE_IDENTITY)
    assert [r.source_resource_id for r in pending] == uids
    assert all(r.state != c.ORCH_REQUEST_FAILED for r in pending)
    engine.sim.clear_faults(down)
    await converge(engine)
    # The subcloud converges when the last POST lands; the request is marked completed only
    # after its answer arrives, so the database trails the simulator by one write.
    with trio.fail_after(10):
        await wait_until(lambda: no_pending(engine, down))


async def no_pending(engine: Engine, region: str) -> bool:
    return not await engine.db.pending_requests(region, c.ENDPOINT_TYPE_IDENTITY)


async def test_injected_500s_are_retried_then_marked_failed(start_engine) -> None:
    engine = await started(start_engine, request_retry_backoff=0.01, request_retry_backoff_max=0.02)
    bad = engine.sim.regions[0]
    uid = await create_master_user(engine, "carol")
    engine.sim.set_faults(bad, error_rate=1.0, error_status=500)
    await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions[1:], timeout=20)
        while not (failed := await failed_requests(engine, bad)):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert [(r.source_resource_id, r.try_count) for r in failed] == [
        (uid, ENGINE.request_max_attempts)
    ]
    engine.sim.clear_faults(bad)
    with trio.fail_after(10):
        while engine.sim.latest_status(bad, c.ENDPOINT_TYPE_IDENTITY) != "out-of-sync":  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert engine.sim.status_reports(bad, c.ENDPOINT_TYPE_IDENTITY)[-1]["alarmable"] is True


async def failed_requests(engine: Engine, region: str) -> list[PendingRequest]:
    return await engine.db.pending_requests(
        region, c.ENDPOINT_TYPE_IDENTITY, states=(c.ORCH_REQUEST_FAILED,)
    )


async def test_timeouts_keep_the_request_pending_until_the_subcloud_answers(
    start_engine, sim
) -> None:
    """A timeout is not the request's fault: it is tried again, past ``request_max_attempts``."""
    slow = sim.regions[0]
    tries: list[str] = []

    async def counting(ctx, request) -> None:
        if ctx.region == slow and request.resource_type == c.RESOURCE_USERS:
            tries.append(request.source_resource_id)
        await apply_request(ctx, request)

    settings = dataclasses.replace(
        ENGINE, offline_retry_interval=0.2, request_max_attempts=1, subcloud_http_timeout=1.0
    )
    engine: Engine = await start_engine(settings=settings, driver=counting)
    await engine.manage(*sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*sim.regions)
    uid = await create_master_user(engine, "dave")
    engine.sim.set_faults(slow, timeout=True)
    await engine.db.enqueue_work([user_order(uid)])

    async def tried_twice_or_failed() -> bool:
        return tries.count(uid) >= 2 or bool(await failed_requests(engine, slow))

    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions[1:], timeout=20)
        # one attempt allowed: a timeout that counted as one would fail the request instead
        await wait_until(tried_twice_or_failed)
    [pending] = await engine.db.pending_requests(slow, c.ENDPOINT_TYPE_IDENTITY)
    assert pending.state != c.ORCH_REQUEST_FAILED
    assert tries.count(uid) >= 2
    engine.sim.clear_faults(slow)
    await converge(engine)


async def test_audit_repairs_a_user_deleted_directly_on_a_subcloud(start_engine) -> None:
    engine = await started(start_engine)
    uid = await create_master_user(engine, "erin")
    await engine.db.enqueue_work([user_order(uid)])
    await converge(engine)
    drifted = engine.sim.regions[1]
    assert engine.sim.subcloud(drifted).identity.remove("user", uid) is not None
    assert engine.sim.differences([drifted])
    handle = engine.manager.handle(drifted)
    assert handle is not None
    handle.audit_at[c.ENDPOINT_TYPE_IDENTITY] = trio.current_time()
    engine.manager.wake(drifted, c.ENDPOINT_TYPE_IDENTITY)
    await converge(engine)
    assert uid in engine.sim.subcloud(drifted).identity.users


@pytest.mark.parametrize("sim", [{"distinct_default_ids": True, "subclouds": 2}], indirect=True)
async def test_initial_sync_replicates_master_ids_and_keys(start_engine, sim) -> None:
    engine: Engine = await start_engine()
    uid = await create_master_user(engine, "frank")
    region = sim.regions[0]
    admin_before = sim.subcloud(region).identity.find_name("user", "default", "admin")
    master_admin = sim.master.identity.find_name("user", "default", "admin")
    assert admin_before["user"]["id"] != master_admin["user"]["id"]
    await engine.manage(*sim.regions)
    await converge(engine)
    identity = sim.subcloud(region).identity
    assert (
        identity.find_name("user", "default", "admin")["user"]["id"] == master_admin["user"]["id"]
    )
    assert uid in identity.users
    assert sim.subcloud(region).platform.fernet_keys == sim.master.platform.fernet_keys
    row = await engine.db.get_subcloud(region)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_COMPLETED, True)


async def test_crashed_sync_actor_restarts_and_loses_nothing(start_engine) -> None:
    crashes: list[int] = []

    async def flaky(ctx, request) -> None:
        if not crashes and request.resource_type == c.RESOURCE_USERS:
            crashes.append(request.id)
            raise RuntimeError("driver bug")
        await apply_request(ctx, request)

    engine: Engine = await start_engine(driver=flaky)
    await engine.manage(*engine.sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*engine.sim.regions)
    uids = [await create_master_user(engine, f"g{i}") for i in range(3)]
    await engine.db.enqueue_work([user_order(uid) for uid in uids])
    await converge(engine)
    assert len(crashes) == 1
    tree = engine.manager.snapshot()
    assert sum(child.restarts for child in tree.children) == 1
    crashed = [child for child in tree.children if child.restarts]
    assert "driver bug" in (crashed[0].last_error or "")
    with trio.fail_after(10):
        await engine.wait_idle()


async def test_status_reported_once_per_change(start_engine) -> None:
    engine = await started(start_engine, request_retry_backoff=0.01, request_retry_backoff_max=0.02)
    region = engine.sim.regions[0]
    for _ in range(3):
        uid = await create_master_user(engine, f"h{_}")
        await engine.db.enqueue_work([user_order(uid)])
        await converge(engine)
    reports = engine.sim.status_reports(region, c.ENDPOINT_TYPE_IDENTITY)
    assert [r["sync_status"] for r in reports] == ["in-sync"]
    # a permanent failure flips it once, however many passes see it
    await engine.db.enqueue_work([user_order("no-such-user")])
    await engine.db.enqueue_work([user_order("no-such-user-either")])
    with trio.fail_after(10):
        while len(engine.sim.status_reports(region, c.ENDPOINT_TYPE_IDENTITY)) < 2:  # noqa: ASYNC110
            await trio.sleep(0.05)
        # two more passes that see the failed requests, each over with its status update
        for _ in range(2):
            engine.manager.wake(region, c.ENDPOINT_TYPE_IDENTITY)
            await engine.settle(region)
    assert len(await failed_requests(engine, region)) == 2
    reports = engine.sim.status_reports(region, c.ENDPOINT_TYPE_IDENTITY)
    assert [r["sync_status"] for r in reports] == ["in-sync", "out-of-sync"]


# audit: role assignments, per-user revocation events, the admin keyring ----------------------


async def audit(rig: DriverRig, keyring: bool = False) -> AuditResult:
    ctx = await rig.context()
    pair = PairAudit(
        rig.db,
        rig.region,
        c.ENDPOINT_TYPE_IDENTITY,
        ctx.remote,
        rig.fresh_master(),
        rig.db,
        keyring=keyring,
    )
    return await pair.run()


async def drain(rig: DriverRig) -> list[tuple[str, str]]:
    """Apply every queued identity request in id order, as a sync pass would."""
    done = []
    for request in await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY):
        await apply_request(await rig.context(), request)
        await rig.db.update_requests([RequestUpdate(request.id, state=c.ORCH_REQUEST_COMPLETED)])
        done.append((request.resource_type, request.operation_type))
    return done


async def test_audit_grants_a_missing_assignment_after_creating_its_user(rig: DriverRig) -> None:
    await drain_initial(rig)
    ids = {}
    for kind, name in (("projects", "pa"), ("users", "ua"), ("roles", "ra")):
        body: dict[str, object] = {"name": name}
        if kind != "roles":
            body["domain_id"] = "default"
        response = await rig.master_call("POST", kind, json={kind[:-1]: body})
        ids[kind] = response.json()[kind[:-1]]["id"]
    p, u, r = ids["projects"], ids["users"], ids["roles"]
    await rig.master_call("PUT", f"projects/{p}/users/{u}/roles/{r}")
    result = await audit(rig)
    assert result.findings == 4
    assert await drain(rig) == [
        ("users", "post"),
        ("projects", "post"),
        ("roles", "post"),
        (c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, "post"),
    ]
    assert (p, "user", u, r) in rig.cloud.identity.assignments
    assert (await audit(rig)).findings == 0
    # revoked on the master: the audit removes it from the subcloud too
    await rig.master_call("DELETE", f"projects/{p}/users/{u}/roles/{r}")
    assert (await audit(rig)).findings == 1
    assert await drain(rig) == [(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, "delete")]
    assert (p, "user", u, r) not in rig.cloud.identity.assignments
    assert (await audit(rig)).findings == 0


async def drain_initial(rig: DriverRig) -> None:
    """A pristine subcloud equals the master except for dcorch's own bookkeeping."""
    await audit(rig)
    await drain(rig)
    assert (await audit(rig)).findings == 0


async def test_audit_retires_the_aborted_and_timed_out_requests_it_found(rig: DriverRig) -> None:
    """They become failed before the audit starts, so its clean-up of older failures takes them
    (set failed after its start, they stayed live, and the pair alarmed, until the next audit)."""
    await drain_initial(rig)
    await rig.db.enqueue_work([user_order("gone-a"), user_order("gone-b"), user_order("gone-c")])
    first, second, third = await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY)
    await rig.db.update_requests(
        [
            RequestUpdate(first.id, state=c.ORCH_REQUEST_ABORTED),
            RequestUpdate(second.id, state=c.ORCH_REQUEST_TIMED_OUT),
            RequestUpdate(third.id, state=c.ORCH_REQUEST_FAILED),
        ]
    )
    await audit(rig)
    live = await rig.db.pending_requests(
        rig.region,
        c.ENDPOINT_TYPE_IDENTITY,
        states=(c.ORCH_REQUEST_ABORTED, c.ORCH_REQUEST_TIMED_OUT, c.ORCH_REQUEST_FAILED),
    )
    assert live == []


async def test_audit_copies_per_user_revocation_events(rig: DriverRig) -> None:
    await drain_initial(rig)
    response = await rig.master_call(
        "POST", "users", json={"user": {"name": "leaver", "domain_id": "default"}}
    )
    uid = response.json()["user"]["id"]
    await rig.master_call("PATCH", f"users/{uid}", json={"user": {"enabled": False}})
    assert (await audit(rig)).findings == 2
    assert await drain(rig) == [("users", "post"), (c.RESOURCE_REVOKE_EVENTS_FOR_USER, "post")]
    [event] = [e for e in rig.cloud.identity.revocations.values() if e.get("user_id") == uid]
    assert event["issued_before"] == next(
        e["issued_before"]
        for e in rig.sim.master.identity.revocations.values()
        if e.get("user_id") == uid
    )
    assert (await audit(rig)).findings == 0


@pytest.mark.parametrize(
    ("keyring", "drift"),
    [(True, "password"), (False, "password"), (True, "extra")],
)
async def test_admin_password_discrepancy_patches_the_keyring_before_the_put(
    rig: DriverRig, keyring: bool, drift: str
) -> None:
    await drain_initial(rig)
    admin = rig.cloud.identity.find_name("user", "default", "admin")
    assert admin is not None
    if drift == "password":
        row = password_row(hash_password("drifted-pw"), rig.sim.state.wall_clock())
        rig.cloud.identity.put("user", {**admin, "password": [row]})
    else:
        rig.cloud.identity.put("user", {**admin, "user": {**admin["user"], "extra": '{"x": 1}'}})
    result = await audit(rig, keyring=keyring)
    patch = keyring and drift == "password"  # same password: the keyring is right already
    expected = [("users", "patch"), ("users", "put")] if patch else [("users", "put")]
    assert result.findings == len(expected)
    infos = [o.resource_info for o in result.orders]
    if patch:
        # The central password itself is never written to the database.
        assert infos[0] == json.dumps({CENTRAL_PASSWORD: True})
        assert all(rig.sim.admin.password not in info for info in infos)
    assert await drain(rig) == expected
    applied = [o for o in rig.cloud.operations if o["op"] in {"update_user", "replace_user"}]
    if patch:
        assert [(o["op"], o.get("fields")) for o in applied] == [
            ("update_user", ["password"]),
            ("replace_user", None),
        ]
    else:
        assert [o["op"] for o in applied] == ["replace_user"]
    master_admin = rig.sim.master.identity.find_name("user", "default", "admin")
    assert master_admin is not None
    uid = master_admin["user"]["id"]
    assert rules.same_record("users", master_admin, rig.cloud.identity.users[uid])
    assert (await audit(rig, keyring=keyring)).findings == 0


async def test_a_keyring_patch_without_the_central_password_fails_permanently(
    rig: DriverRig,
) -> None:
    await drain_initial(rig)
    admin = rig.cloud.identity.find_name("user", "default", "admin")
    assert admin is not None
    uid = admin["user"]["id"]
    request = await rig.request("users", uid, "patch", {CENTRAL_PASSWORD: True})
    ctx = dataclasses.replace(await rig.context(), keyring_password=None)
    with pytest.raises(PermanentSyncError, match="central password"):
        await apply_request(ctx, request)
    assert [o for o in rig.cloud.operations if o["op"] == "update_user"] == []
