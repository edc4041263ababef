"""Recovery without a process restart: stale initial-sync states and database outages."""

from __future__ import annotations

import trio

from dcorch import constants as c

from .conftest import wait_until
from .test_integration import create_master_user, started, user_order


async def test_initial_sync_left_in_progress_by_a_crashed_actor_is_redone(start_engine) -> None:
    engine = await started(start_engine)
    region = engine.sim.regions[0]
    # What an actor that crashed half-way through an initial sync leaves behind.
    assert await engine.db.set_initial_sync_state(
        region, c.INITIAL_SYNC_COMPLETED, c.INITIAL_SYNC_IN_PROGRESS
    )
    await engine.manager.subcloud_changed(region)

    async def completed() -> bool:
        row = await engine.db.get_subcloud(region)
        return row.initial_sync_state == c.INITIAL_SYNC_COMPLETED

    with trio.fail_after(20):
        await wait_until(completed)
    # And the subcloud is back in service: new work reaches it.
    uid = await create_master_user(engine, "after-recovery")
    await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(20):
        await wait_until(lambda: uid in engine.sim.subcloud(region).identity.users)
