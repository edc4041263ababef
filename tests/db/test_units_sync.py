"""Group-commit units: a batch gives each caller what its unit alone would have given."""

from __future__ import annotations

import pytest

from dcorch import constants as c
from dcorch.db import Database, RequestUpdate, units_sync
from dcorch.db import units_requests as ur
from dcorch.db import units_resources as rs
from dcorch.db import units_subclouds as us
from dcorch.db.errors import SubcloudNotFound
from dcorch.work import WorkOrder
from tests.db.conftest import make_eligible

REGIONS = ("a", "b", "c")


def _order(master_id: str, op: str = "post") -> WorkOrder:
    return WorkOrder("identity", "users", master_id, op)


async def test_pending_requests_many_matches_one_pair_at_a_time(db: Database) -> None:
    await make_eligible(db, *REGIONS)
    await db.enqueue_work([_order("u1"), WorkOrder("platform", "iuser", "i1", "put")])
    await db.enqueue_work([_order("u2", "put")])
    pairs = (("a", "identity"), ("b", "platform"), ("c", "identity"), ("zz", "identity"))
    states = tuple(c.ORCH_REQUEST_PENDING_STATES)
    many = await db.run_readonly(units_sync.pending_requests_many, pairs, states)
    for region, ept in pairs:
        assert many[(region, ept)] == await db.pending_requests(region, ept, states=states)
    assert [p.source_resource_id for p in many[("a", "identity")]] == ["u1", "u2"]
    assert many[("zz", "identity")] == []


async def test_bulk_request_updates_report_the_ids_each_caller_changed(db: Database) -> None:
    await make_eligible(db, *REGIONS)
    await db.enqueue_work([_order("u1"), _order("u2")])
    ids = {r: [p.id for p in await db.pending_requests(r, "identity")] for r in REGIONS}
    await db.update_requests([RequestUpdate(ids["c"][0], state=c.ORCH_REQUEST_COMPLETED)])
    ops = (
        (ur.update_requests, ((RequestUpdate(ids["a"][0], state="in-progress", try_count=2),),)),
        (ur.update_requests, ((RequestUpdate(ids["b"][0], state=c.ORCH_REQUEST_COMPLETED),),)),
        (ur.update_requests, ((RequestUpdate(ids["c"][0], state="failed"),),)),  # gone already
        (ur.update_requests, ((RequestUpdate(ids["a"][1], try_count_increment=3),),)),
    )
    results = await db.run(units_sync.run_batch, ops)
    assert results == [[ids["a"][0]], [ids["b"][0]], [], [ids["a"][1]]]
    a = {p.id: p for p in await db.pending_requests("a", "identity")}
    assert (a[ids["a"][0]].state, a[ids["a"][0]].try_count) == ("in-progress", 2)
    assert a[ids["a"][1]].try_count == 3
    assert [p.id for p in await db.pending_requests("b", "identity")] == [ids["b"][1]]


async def test_bulk_sync_row_updates_return_the_new_rows(db: Database) -> None:
    await make_eligible(db, *REGIONS)
    ops = (
        (us.update_subcloud_sync, ("a", "identity", {"sync_request": "completed"})),
        (us.update_subcloud_sync, ("b", "identity", {"sync_request": "failed"})),
        (us.update_subcloud_sync, ("c", "platform", {"audit_status": "completed"})),
    )
    rows = await db.run(units_sync.run_batch, ops)
    assert [(r.subcloud_name, r.endpoint_type) for r in rows] == [
        ("a", "identity"),
        ("b", "identity"),
        ("c", "platform"),
    ]
    assert [rows[0].sync_request, rows[1].sync_request, rows[2].audit_status] == [
        "completed",
        "failed",
        "completed",
    ]
    assert rows == [
        next(s for s in await db.list_subcloud_syncs(r) if s.endpoint_type == e)
        for r, e, _ in (op[1] for op in ops)
    ]


async def test_bulk_mapping_upserts_create_and_update(db: Database) -> None:
    await make_eligible(db, *REGIONS)
    await db.upsert_subcloud_resource("a", "users", "m1", "old")
    ops = tuple(
        (rs.upsert_subcloud_resource, (region, "users", mid, f"{region}-{mid}", state))
        for region, mid, state in (("a", "m1", None), ("b", "m1", None), ("c", "m2", "unmanaged"))
    )
    rows = await db.run(units_sync.run_batch, ops)
    assert [(r.region_name, r.master_id, r.subcloud_resource_id) for r in rows] == [
        ("a", "m1", "a-m1"),
        ("b", "m1", "b-m1"),
        ("c", "m2", "c-m2"),
    ]
    assert rows[2].shared_config_state == "unmanaged"
    assert rows[0].resource_id == rows[1].resource_id
    for row in rows:
        assert row == await db.get_subcloud_resource(row.region_name, "users", row.master_id)


async def test_a_failing_unit_fails_the_whole_batch(db: Database) -> None:
    await make_eligible(db, "a")
    ops = (
        (rs.upsert_subcloud_resource, ("a", "users", "m1", "x", None)),
        (rs.upsert_subcloud_resource, ("nowhere", "users", "m1", "y", None)),
    )
    with pytest.raises(SubcloudNotFound):
        await db.run(units_sync.run_batch, ops)
    assert await db.get_subcloud_resource("a", "users", "m1") is None
