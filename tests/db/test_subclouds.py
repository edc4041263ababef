"""Subcloud and subcloud_sync units.

See docs/behaviour.md#initial-sync and docs/behaviour.md#subcloud-lifecycle.
"""

from __future__ import annotations

import pytest

from dcorch import constants as c
from dcorch.db import (
    Database,
    SubcloudAlreadyExists,
    SubcloudNotFound,
    SubcloudSyncNotFound,
)
from dcorch.work import WorkOrder
from tests.db.conftest import make_eligible


async def test_add_get_list(db: Database) -> None:
    row = await db.add_subcloud("sc1", software_version="24.09", management_ip="10.0.0.1")
    assert row.region_name == "sc1"
    assert row.management_state is None
    assert row.availability_status == c.AVAILABILITY_OFFLINE
    assert row.initial_sync_state == c.INITIAL_SYNC_NONE
    assert row.subsequent_sync is False
    assert row.endpoint_types == c.SYNC_ENDPOINT_TYPES
    assert len(row.uuid) == 36
    assert await db.get_subcloud("sc1") == row
    await db.add_subcloud("sc2", endpoint_types=("platform",))
    assert [s.region_name for s in await db.list_subclouds()] == ["sc1", "sc2"]
    syncs = await db.list_subcloud_syncs()
    assert [(s.subcloud_name, s.endpoint_type) for s in syncs] == [
        ("sc1", "identity"),
        ("sc1", "platform"),
        ("sc2", "platform"),
    ]
    assert {s.sync_request for s in syncs} == {c.SYNC_REQUEST_NONE}
    assert {s.audit_status for s in syncs} == {c.AUDIT_NONE}


async def test_duplicate_region_and_unknown_region(db: Database) -> None:
    await db.add_subcloud("sc1")
    with pytest.raises(SubcloudAlreadyExists, match=r"^subcloud 'sc1' already exists$"):
        await db.add_subcloud("sc1")
    assert len(await db.list_subcloud_syncs()) == 2  # the failed add left nothing behind
    with pytest.raises(SubcloudNotFound, match=r"^subcloud 'nope' not found$"):
        await db.get_subcloud("nope")
    with pytest.raises(SubcloudNotFound):
        await db.delete_subcloud("nope")
    with pytest.raises(SubcloudNotFound):
        await db.list_subcloud_syncs("nope")


async def test_state_transitions_drive_initial_sync(db: Database) -> None:
    await db.add_subcloud("sc1")
    row = await db.update_subcloud_states("sc1", availability_status=c.AVAILABILITY_ONLINE)
    assert row.initial_sync_state == c.INITIAL_SYNC_NONE  # online but never managed
    row = await db.update_subcloud_states("sc1", management_state=c.MANAGEMENT_MANAGED)
    assert row.initial_sync_state == c.INITIAL_SYNC_REQUESTED
    assert await db.set_initial_sync_state(
        "sc1", c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_IN_PROGRESS
    )
    assert await db.set_initial_sync_state(
        "sc1", c.INITIAL_SYNC_IN_PROGRESS, c.INITIAL_SYNC_COMPLETED, subsequent_sync=True
    )
    # Unchanged states are a no-op: the completed initial sync is not re-requested.
    same = await db.update_subcloud_states(
        "sc1", management_state=c.MANAGEMENT_MANAGED, availability_status=c.AVAILABILITY_ONLINE
    )
    assert same.initial_sync_state == c.INITIAL_SYNC_COMPLETED
    assert same.updated_at == (await db.get_subcloud("sc1")).updated_at
    row = await db.update_subcloud_states("sc1", availability_status=c.AVAILABILITY_OFFLINE)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, True)
    row = await db.update_subcloud_states("sc1", availability_status=c.AVAILABILITY_ONLINE)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_REQUESTED, True)
    row = await db.update_subcloud_states("sc1", management_state=c.MANAGEMENT_UNMANAGED)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, False)
    assert row.management_state == c.MANAGEMENT_UNMANAGED
    assert row.availability_status == c.AVAILABILITY_ONLINE


async def test_cas_writes_subsequent_sync_only_when_it_wins(db: Database) -> None:
    await make_eligible(db, "sc1")
    await db.update_subcloud_states("sc1", management_state=c.MANAGEMENT_UNMANAGED)
    # An initial sync finishing after the unmanage loses its CAS and must not set the flag.
    assert not await db.set_initial_sync_state(
        "sc1", c.INITIAL_SYNC_IN_PROGRESS, c.INITIAL_SYNC_COMPLETED, subsequent_sync=True
    )
    row = await db.get_subcloud("sc1")
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, False)
    assert not await db.set_initial_sync_state("nope", "none", "requested")


async def test_update_subcloud_and_sync_row(db: Database) -> None:
    await db.add_subcloud("sc1", software_version="22.12")
    row = await db.update_subcloud("sc1", software_version="24.09", management_ip="fd00::1")
    assert (row.software_version, row.management_ip) == ("24.09", "fd00::1")
    sync = await db.update_subcloud_sync(
        "sc1", "identity", audit_status=c.AUDIT_IN_PROGRESS, sync_request="requested"
    )
    assert (sync.audit_status, sync.sync_request) == (c.AUDIT_IN_PROGRESS, "requested")
    assert sync.updated_at is not None
    with pytest.raises(ValueError, match=r"^not a subcloud_sync field: bogus$"):
        await db.update_subcloud_sync("sc1", "identity", bogus=1)
    with pytest.raises(SubcloudSyncNotFound):
        await db.update_subcloud_sync("sc1", "usm", audit_status=c.AUDIT_NONE)
    with pytest.raises(SubcloudNotFound):
        await db.update_subcloud_sync("nope", "identity", audit_status=c.AUDIT_NONE)


async def test_delete_subcloud_removes_its_rows(db: Database) -> None:
    await make_eligible(db, "sc1", "sc2")
    await db.enqueue_work([WorkOrder("identity", "users", "u1", "post")])
    await db.upsert_subcloud_resource("sc1", "users", "u1", "u1-in-sc1")
    await db.delete_subcloud("sc1")
    assert [s.region_name for s in await db.list_subclouds()] == ["sc2"]
    assert {s.subcloud_name for s in await db.list_subcloud_syncs()} == {"sc2"}
    assert await db.pending_requests("sc1", "identity") == []
    assert await db.count_requests_by_state() == {c.ORCH_REQUEST_QUEUED: 1}
    # Re-adding the region starts clean (docs/behaviour.md#subcloud-lifecycle).
    await db.add_subcloud("sc1")
    assert await db.get_subcloud_resource("sc1", "users", "u1") is None
    assert await db.pending_requests("sc1", "identity") == []
