"""resource / subcloud_resource helpers."""

from __future__ import annotations

import pytest

from dcorch import constants as c
from dcorch.db import Database, SubcloudNotFound


async def test_mapping_lifecycle(db: Database) -> None:
    await db.add_subcloud("a")
    await db.add_subcloud("b")
    assert await db.get_subcloud_resource("a", "users", "u1") is None
    row = await db.upsert_subcloud_resource("a", "users", "u1", "u1-in-a")
    assert (row.region_name, row.resource_type, row.master_id) == ("a", "users", "u1")
    assert (row.subcloud_resource_id, row.shared_config_state) == ("u1-in-a", "managed")
    assert row.subcloud_id == (await db.get_subcloud("a")).id
    again = await db.upsert_subcloud_resource(
        "a", "users", "u1", "u1-new", shared_config_state=c.SHARED_CONFIG_UNMANAGED
    )
    assert (again.id, again.resource_id) == (row.id, row.resource_id)
    assert (again.subcloud_resource_id, again.shared_config_state) == ("u1-new", "unmanaged")
    kept = await db.upsert_subcloud_resource("a", "users", "u1", "u1-newer")
    assert kept.shared_config_state == "unmanaged"  # None keeps the stored value
    other = await db.upsert_subcloud_resource("b", "users", "u1", "u1-in-b")
    assert other.resource_id == row.resource_id  # one resource row per master object
    await db.upsert_subcloud_resource("a", "groups", "g1", "g1")
    assert [m.master_id for m in await db.list_subcloud_resources("a")] == ["u1", "g1"]
    assert [m.master_id for m in await db.list_subcloud_resources("a", "groups")] == ["g1"]
    assert [r.master_id for r in await db.list_resources("users")] == ["u1"]
    assert await db.get_subcloud_resource("a", "users", "u1") == kept
    assert await db.delete_subcloud_resource("a", "users", "u1")
    assert not await db.delete_subcloud_resource("a", "users", "u1")
    assert await db.get_subcloud_resource("a", "users", "u1") is None
    assert await db.get_subcloud_resource("b", "users", "u1") == other
    with pytest.raises(SubcloudNotFound):
        await db.upsert_subcloud_resource("nope", "users", "u1", "x")
