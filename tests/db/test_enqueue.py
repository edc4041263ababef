"""enqueue_work: eligibility, fan-out, batching, resource races and atomicity.

See docs/behaviour.md#recording-work and docs/behaviour.md#eligible-subclouds.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from dcorch import constants as c
from dcorch.db import Database, SubcloudNotFound
from dcorch.db.schema import orch_job, orch_request, resource
from dcorch.db.units_work import enqueue_work
from dcorch.work import WorkOrder
from tests.db.conftest import make_eligible

USER = WorkOrder("identity", "users", "u1", "post", '{"user": {}}')


def _counts(conn: Connection) -> tuple[int, int, int]:
    def n(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    return n(resource), n(orch_job), n(orch_request)


async def _sync_requests(db: Database, endpoint_type: str) -> dict[str, str]:
    return {
        s.subcloud_name: s.sync_request
        for s in await db.list_subcloud_syncs()
        if s.endpoint_type == endpoint_type
    }


async def test_only_eligible_subclouds_get_requests(db: Database) -> None:
    await make_eligible(db, "ok1", "ok2")
    await db.add_subcloud("never")  # not managed, offline, initial sync none
    await make_eligible(db, "unmanaged", "offline", "initfailed")
    await db.update_subcloud_states("unmanaged", management_state=c.MANAGEMENT_UNMANAGED)
    await db.update_subcloud_states("offline", availability_status=c.AVAILABILITY_OFFLINE)
    assert await db.set_initial_sync_state("initfailed", "completed", "failed")
    await db.add_subcloud("platform-only", endpoint_types=("platform",))
    await make_eligible(db, "late")
    await db.update_subcloud_states("late", availability_status=c.AVAILABILITY_OFFLINE)
    await db.update_subcloud_states("late", availability_status=c.AVAILABILITY_ONLINE)

    [result] = await db.enqueue_work([USER])
    assert result.target_regions == ("ok1", "ok2")
    for region in ("ok1", "ok2"):
        [req] = await db.pending_requests(region, "identity")
        assert (req.state, req.try_count, req.orch_job_id) == ("queued", 0, result.orch_job_id)
        assert (req.resource_type, req.source_resource_id) == ("users", "u1")
        assert (req.operation_type, req.resource_info) == ("post", '{"user": {}}')
        assert req.resource_id == result.resource_id
    for region in ("never", "unmanaged", "offline", "initfailed", "late"):
        assert await db.pending_requests(region, "identity") == []
    assert await _sync_requests(db, "identity") == {
        "ok1": "requested",
        "ok2": "requested",
        "never": "none",
        "unmanaged": "none",
        "offline": "none",
        "initfailed": "none",
        "late": "none",
    }
    assert set((await _sync_requests(db, "platform")).values()) == {"none"}


async def test_subcloud_without_the_endpoint_type_is_not_targeted(db: Database) -> None:
    await make_eligible(db, "ok1")
    await db.add_subcloud("p", endpoint_types=("platform",))
    await db.update_subcloud_states("p", management_state="managed", availability_status="online")
    assert await db.set_initial_sync_state("p", "requested", "completed")
    [result] = await db.enqueue_work([USER])
    assert result.target_regions == ("ok1",)


async def test_explicit_subcloud_target_ignores_eligibility(db: Database) -> None:
    await make_eligible(db, "ok1")
    await db.add_subcloud("new")
    order = WorkOrder("platform", "certificates", "sig", "create", subcloud="new")
    [result] = await db.enqueue_work([order])
    assert result.target_regions == ("new",)
    assert [r.source_resource_id for r in await db.pending_requests("new", "platform")] == ["sig"]
    assert await db.pending_requests("ok1", "platform") == []
    assert await _sync_requests(db, "platform") == {"ok1": "none", "new": "requested"}


async def test_no_target_still_creates_the_job(db: Database) -> None:
    await db.add_subcloud("offline")
    [result] = await db.enqueue_work([USER])
    assert result.target_regions == ()
    assert await db.run(_counts) == (1, 1, 0)
    assert set((await _sync_requests(db, "identity")).values()) == {"none"}


async def test_many_orders_one_transaction(db: Database) -> None:
    await make_eligible(db, "a", "b", "c")
    orders = [
        WorkOrder("identity", "users", "u1", "create"),
        WorkOrder("identity", "users", "u1", "create"),  # same resource: one row
        WorkOrder("identity", "users", "u1", "patch"),
        WorkOrder("platform", "iuser", "i1", "patch", subcloud="b"),
        WorkOrder("identity", "projects", "p1", "delete"),
    ]
    results = await db.enqueue_work(orders)
    assert [r.target_regions for r in results] == [("a", "b", "c")] * 3 + [("b",), ("a", "b", "c")]
    assert results[0].resource_id == results[1].resource_id == results[2].resource_id
    assert len({r.orch_job_id for r in results}) == 5
    assert [r.orch_job_id for r in results] == sorted(r.orch_job_id for r in results)
    assert await db.run(_counts) == (3, 5, 13)
    assert [r.source_resource_id for r in await db.pending_requests("a", "identity")] == [
        "u1",
        "u1",
        "u1",
        "p1",
    ]
    assert [r.operation_type for r in await db.pending_requests("b", "platform")] == ["patch"]
    assert await _sync_requests(db, "platform") == {"a": "none", "b": "requested", "c": "none"}
    # A later order for an existing resource reuses it (lookup-first branch).
    [again] = await db.enqueue_work([WorkOrder("identity", "users", "u1", "delete")])
    assert again.resource_id == results[0].resource_id
    assert [r.master_id for r in await db.list_resources("users")] == ["u1"]


async def test_concurrent_creators_share_one_resource_row(db: Database) -> None:
    import trio

    await make_eligible(db, "a")
    results = []

    async def create() -> None:
        results.extend(await db.enqueue_work([WorkOrder("identity", "users", "race", "create")]))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(create)
    assert len({r.resource_id for r in results}) == 1
    assert len(await db.list_resources("users")) == 1
    assert len(await db.pending_requests("a", "identity")) == 4


async def test_unknown_target_rolls_back_everything(db: Database) -> None:
    await make_eligible(db, *(f"sc{i}" for i in range(50)))
    orders = [USER, WorkOrder("platform", "iuser", "i1", "patch", subcloud="ghost")]
    with pytest.raises(SubcloudNotFound, match=r"^subcloud 'ghost' not found$"):
        await db.enqueue_work(orders)
    assert await db.run(_counts) == (0, 0, 0)
    assert set((await _sync_requests(db, "identity")).values()) == {"none"}


def _enqueue_then_fail(conn: Connection, orders: list[WorkOrder]) -> None:
    enqueue_work(conn, orders)
    assert _counts(conn)[2] == 50  # the bulk insert (COPY on PostgreSQL) did run
    raise RuntimeError("later step of the same transaction failed")


async def test_bulk_insert_rolls_back_with_the_transaction(db: Database) -> None:
    await make_eligible(db, *(f"sc{i}" for i in range(50)))
    with pytest.raises(RuntimeError, match="later step"):
        await db.run(_enqueue_then_fail, [USER])
    assert await db.run(_counts) == (0, 0, 0)
    await db.enqueue_work([USER])  # and the database is usable right away
    assert await db.run(_counts) == (1, 1, 50)


async def test_empty_batch(db: Database) -> None:
    assert await db.enqueue_work([]) == []


async def test_an_order_with_a_recorded_job_uuid_is_not_written_twice(db: Database) -> None:
    await make_eligible(db, "ok1", "ok2")
    first = WorkOrder("identity", "users", "u9", "post", "{}", job_uuid="job-key-1")
    second = WorkOrder("identity", "users", "u10", "post", "{}", job_uuid="job-key-2")
    [original] = await db.enqueue_work([first])
    before = await db.run(_counts)
    # A retry of the same batch (e.g. after a connection lost during COMMIT) plus a new order.
    again, new = await db.enqueue_work([first, second])
    assert again == original
    assert set(original.target_regions) == {"ok1", "ok2"}
    assert new.orch_job_id != original.orch_job_id
    resources, jobs, requests = await db.run(_counts)
    assert (jobs, requests) == (before[1] + 1, before[2] + 2)
    assert resources == before[0] + 1
