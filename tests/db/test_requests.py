"""orch_request units: pending order, updates, soft delete, failed cleanup, counts, purge."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, update

from dcorch import constants as c
from dcorch.db import Database, PurgeCounts, RequestUpdate, units_sync
from dcorch.db import units_requests as ur
from dcorch.db.schema import orch_request, utcnow
from dcorch.work import WorkOrder
from tests.db.conftest import make_eligible


def _order(master_id: str, ept: str = "identity", op: str = "post") -> WorkOrder:
    rtype = "users" if ept == "identity" else "iuser"
    return WorkOrder(ept, rtype, master_id, op)


async def test_pending_requests_in_id_order_per_pair(db: Database) -> None:
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1"), _order("i1", "platform")])
    await db.enqueue_work([_order("u2", op="put")])
    await db.enqueue_work([_order("u3", op="delete")])
    pending = await db.pending_requests("a", "identity")
    assert [p.source_resource_id for p in pending] == ["u1", "u2", "u3"]
    assert [p.id for p in pending] == sorted(p.id for p in pending)
    assert {p.target_region_name for p in pending} == {"a"}
    assert [p.source_resource_id for p in await db.pending_requests("a", "platform")] == ["i1"]
    limited = await db.pending_requests("a", "identity", limit=2)
    assert [p.source_resource_id for p in limited] == ["u1", "u2"]
    await db.update_requests([RequestUpdate(pending[1].id, state=c.ORCH_REQUEST_FAILED)])
    only_failed = await db.pending_requests("a", "identity", states=[c.ORCH_REQUEST_FAILED])
    assert [p.source_resource_id for p in only_failed] == ["u2"]


async def test_update_requests_and_soft_delete_on_completion(db: Database) -> None:
    await make_eligible(db, "a")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("u3")])
    r1, r2, r3 = await db.pending_requests("a", "identity")
    done = await db.update_requests(
        [
            RequestUpdate(r1.id, state=c.ORCH_REQUEST_IN_PROGRESS),
            RequestUpdate(r2.id, state=c.ORCH_REQUEST_FAILED, try_count_increment=1),
            RequestUpdate(r2.id, try_count_increment=1),
            RequestUpdate(r3.id, try_count=7),
            RequestUpdate(999_999, state=c.ORCH_REQUEST_COMPLETED),
        ]
    )
    assert done == [r1.id, r2.id, r2.id, r3.id]
    p1, p2, p3 = await db.pending_requests("a", "identity")
    assert (p1.state, p2.state, p2.try_count, p3.try_count) == ("in-progress", "failed", 2, 7)
    assert p1.updated_at is not None
    assert await db.update_requests([RequestUpdate(r1.id, state=c.ORCH_REQUEST_COMPLETED)]) == [
        r1.id
    ]
    assert [p.id for p in await db.pending_requests("a", "identity")] == [r2.id, r3.id]
    assert await db.count_requests_by_state() == {"failed": 1, "queued": 1}
    # A soft-deleted row is gone for good: later updates skip it ("the row vanished").
    assert await db.update_requests([RequestUpdate(r1.id, state=c.ORCH_REQUEST_FAILED)]) == []


async def test_failed_request_cleanup_is_per_pair(db: Database) -> None:
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("i1", "platform")])
    ids = {
        (p.target_region_name, p.source_resource_id): p.id
        for region in ("a", "b")
        for ept in ("identity", "platform")
        for p in await db.pending_requests(region, ept)
    }
    await db.update_requests([RequestUpdate(i, state=c.ORCH_REQUEST_FAILED) for i in ids.values()])
    await db.update_requests([RequestUpdate(ids[("a", "u1")], try_count=1)])  # changed last
    latest = await db.get_most_recent_failed_request("a", "identity")
    assert latest is not None
    assert latest.id == ids[("a", "u1")]
    assert await db.get_most_recent_failed_request("a", "usm") is None

    assert await db.soft_delete_failed_requests("a", "identity", utcnow() - timedelta(hours=1)) == 0
    assert await db.soft_delete_failed_requests("a", "identity", utcnow()) == 2
    assert await db.get_most_recent_failed_request("a", "identity") is None
    # Other subclouds and other endpoint types keep their failed requests
    # (docs/behaviour.md#global-failed-request-cleanup).
    assert len(await db.pending_requests("b", "identity")) == 2
    assert len(await db.pending_requests("a", "platform")) == 1
    assert await db.count_requests_by_state() == {"failed": 4}


def _age_deleted(conn: Connection, days: int) -> None:
    old = utcnow() - timedelta(days=days)
    conn.execute(update(orch_request).where(orch_request.c.deleted != 0).values(deleted_at=old))


async def test_purge_removes_old_soft_deleted_then_orphans(db: Database) -> None:
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("u3")])
    await db.upsert_subcloud_resource("a", "users", "mapped", "m-in-a")
    requests = {
        (p.target_region_name, p.source_resource_id): p.id
        for region in ("a", "b")
        for p in await db.pending_requests(region, "identity")
    }
    completed = [requests[("a", "u1")], requests[("b", "u1")], requests[("a", "u2")]]
    await db.update_requests([RequestUpdate(i, state=c.ORCH_REQUEST_COMPLETED) for i in completed])
    # Soft-deleted but younger than the age: nothing goes; live data never goes.
    assert await db.purge_deleted(1) == PurgeCounts(0, 0, 0)
    await db.run(_age_deleted, 2)
    counts = await db.purge_deleted(1)
    # 3 old requests; job u1 lost all its requests; u2 still has a live one (b), u3 untouched.
    assert counts == PurgeCounts(orch_requests=3, orch_jobs=1, resources=1)
    assert await db.count_requests_by_state() == {"queued": 3}
    assert [r.master_id for r in await db.list_resources("users")] == ["u2", "u3", "mapped"]
    assert await db.purge_deleted(1) == PurgeCounts(0, 0, 0)


async def test_a_request_result_is_kept_with_the_completed_row(db: Database) -> None:
    """A no-op completion's reason survives the soft delete; both write paths store it."""
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("u3", op="patch")])
    r1, r2, r3 = await db.pending_requests("a", "identity")
    (b1, *_) = await db.pending_requests("b", "identity")
    assert r1.result is None
    await db.update_requests(
        [RequestUpdate(r1.id, state=c.ORCH_REQUEST_COMPLETED, result="superseded")]
    )
    await db.update_requests([RequestUpdate(r2.id, state=c.ORCH_REQUEST_COMPLETED)])
    ops = (  # the group writer's bulk path (several callers in one batch)
        (ur.update_requests, ((RequestUpdate(r3.id, state="completed", result="no_mapping"),),)),
        (ur.update_requests, ((RequestUpdate(b1.id, state="completed"),),)),
    )
    await db.run(units_sync.run_batch, ops)
    done = await db.completed_requests("a", limit=10)
    assert [(p.id, p.state, p.result) for p in done] == [
        (r1.id, "completed", "superseded"),
        (r2.id, "completed", None),
        (r3.id, "completed", "no_mapping"),
    ]
    assert [p.id for p in await db.completed_requests("a", limit=2)] == [r2.id, r3.id]
    assert [(p.id, p.result) for p in await db.completed_requests("b", limit=10)] == [(b1.id, None)]
    assert await db.pending_requests("a", "identity") == []


async def test_imported_capabilities_are_not_taken_for_a_result(db: Database) -> None:
    await make_eligible(db, "a")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("u3")])
    rows = await db.pending_requests("a", "identity")

    def fill(conn: Connection) -> None:
        for row, text in zip(rows, ("not json", '["result"]', '{"result": 7}'), strict=True):
            conn.execute(
                update(orch_request).where(orch_request.c.id == row.id).values(capabilities=text)
            )

    await db.run(fill)
    assert [p.result for p in await db.pending_requests("a", "identity")] == [None, None, None]


async def test_a_later_delete_is_found_queued_or_done_never_earlier_or_elsewhere(
    db: Database,
) -> None:
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1", op="delete")])
    await db.enqueue_work([_order("u1"), _order("u2")])
    create, other = (await db.pending_requests("a", "identity"))[1:]
    assert not await db.later_delete_exists("a", create.resource_id, create.id)  # only earlier
    await db.enqueue_work([_order("u1", op="patch"), _order("u2", op="delete")])
    assert not await db.later_delete_exists("a", create.resource_id, create.id)  # another user
    await db.enqueue_work([WorkOrder("identity", "users", "u1", "delete", subcloud="b")])
    assert not await db.later_delete_exists("a", create.resource_id, create.id)  # another region
    assert await db.later_delete_exists("b", create.resource_id, create.id)
    assert await db.later_delete_exists("a", other.resource_id, other.id)
    [u1_delete] = await db.enqueue_work([_order("u1", op="delete")])
    assert await db.later_delete_exists("a", create.resource_id, create.id)  # queued
    pending = await db.pending_requests("a", "identity")
    [mine] = [p for p in pending if p.orch_job_id == u1_delete.orch_job_id]
    for state, found in (
        (c.ORCH_REQUEST_IN_PROGRESS, True),
        (c.ORCH_REQUEST_FAILED, False),
        (c.ORCH_REQUEST_COMPLETED, True),  # soft deleted, still found until the purge
    ):
        await db.run(_set_state, mine.id, state)
        assert await db.later_delete_exists("a", create.resource_id, create.id) is found, state


def _set_state(conn: Connection, request_id: int, state: str) -> None:
    deleted = 1 if state == c.ORCH_REQUEST_COMPLETED else 0
    conn.execute(
        update(orch_request)
        .where(orch_request.c.id == request_id)
        .values(state=state, deleted=deleted)
    )


async def test_subcloud_backlogs_count_only_work_still_to_apply(db: Database) -> None:
    await make_eligible(db, "a", "b")
    await db.add_subcloud("c")
    await db.enqueue_work([_order("u1"), _order("u2"), _order("i1", "platform")])
    a1, a2 = await db.pending_requests("a", "identity")
    [b1, _] = await db.pending_requests("b", "identity")
    await db.update_requests(
        [
            RequestUpdate(a1.id, state=c.ORCH_REQUEST_IN_PROGRESS),
            RequestUpdate(a2.id, state=c.ORCH_REQUEST_COMPLETED),
            RequestUpdate(b1.id, state=c.ORCH_REQUEST_FAILED),  # final: not work to wait for
        ]
    )
    backlogs = await db.subcloud_backlogs()
    assert [(b.region_name, b.initial_sync_state, b.work) for b in backlogs] == [
        ("a", "completed", 2),
        ("b", "completed", 2),
        ("c", "none", 0),
    ]
    assert (backlogs[2].management_state, backlogs[2].availability_status) == (None, "offline")
    assert [b.region_name for b in await db.subcloud_backlogs(["c", "a", "zz"])] == ["a", "c"]


async def test_request_regions_of_a_resource_include_completed_requests(db: Database) -> None:
    await make_eligible(db, "a", "b")
    await db.enqueue_work([_order("u1"), _order("u2")])
    await db.enqueue_work([_order("u1", op="patch")])
    done = [
        RequestUpdate(p.id, state=c.ORCH_REQUEST_COMPLETED)
        for p in await db.pending_requests("a", "identity")
    ]
    await db.update_requests(done)
    assert await db.request_regions("users", "u1") == ["a", "b", "a", "b"]
    assert await db.request_regions("users", "u2") == ["a", "b"]
    assert await db.request_regions("users", "nobody") == []
