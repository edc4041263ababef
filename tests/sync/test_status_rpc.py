"""The engine reporting through the RPC status outbox, driven by dcmanager's RPC calls.

Simulated subclouds, the real database and sync manager; dcmanager is the RPC endpoint's
handlers on one side and an in-memory caster on the other. Subclouds added and managed by RPC
are announced in-sync once per pair (de-duplicated), and a pass that turns a pair out-of-sync
while the broker is away completes all the same; the report is cast when the broker is back,
and the database records it only then.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from actors import Backoff
from dcorch import constants as c
from dcorch.db import Database
from dcorch.lifecycle import SubcloudLifecycle
from dcorch.remote.http import HttpSession
from dcorch.rpc.contract import Handler
from dcorch.rpc.dcmanager_endpoint import DcmanagerEndpoint
from dcorch.rpc.status_outbox import RpcStatusReporter, StatusOutbox
from dcorch.sim import SimCloud
from dcorch.sim.endpoints import SimResolver
from dcorch.sync.manager import SyncManager
from dcorch.sync.status import DeliveryRecord
from dcorch.work import WorkOrder
from tests.rpc.recording_caster import RecordingCaster

from .conftest import ACTORS, ENGINE, wait_until

CTXT = {"request_id": "req-dcmanager"}
IN, OUT = c.SYNC_STATUS_IN_SYNC, c.SYNC_STATUS_OUT_OF_SYNC


def latest(caster: RecordingCaster) -> dict[tuple[str, str], str]:
    """Each pair's last cast status."""
    return {(r, e): s for r, e, s, _ in caster.reports()}


async def reported(db: Database, region: str) -> dict[str, str]:
    return {s.endpoint_type: s.sync_status_reported for s in await db.list_subcloud_syncs(region)}


async def master_user(sim: SimCloud, name: str) -> str:
    body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{sim.endpoints.master_keystone}/users",
            json=body,
            headers={"X-Auth-Token": sim.admin_token()},
        )
    response.raise_for_status()
    return str(response.json()["user"]["id"])


def user_order(region: str, user_id: str) -> WorkOrder:
    return WorkOrder(
        c.ENDPOINT_TYPE_IDENTITY,
        c.RESOURCE_USERS,
        user_id,
        c.OPERATION_POST,
        json.dumps({}),
        subcloud=region,
    )


@dataclass
class Dcmanager:
    """dcmanager's view of a running engine: its RPC calls and the casts it receives."""

    rpc: Mapping[str, Handler]
    caster: RecordingCaster
    outbox: StatusOutbox
    manager: SyncManager
    endpoint_types: tuple[str, ...]

    async def call(self, method: str, **kwargs: Any) -> Any:
        return await self.rpc[method](CTXT, **kwargs)


@pytest.fixture
async def dcmanager(
    nursery: trio.Nursery, sim: SimCloud, db: Database, http: HttpSession
) -> Dcmanager:
    caster = RecordingCaster()
    outbox = StatusOutbox(
        caster,
        backoff=Backoff(base=0.05, cap=0.2, jitter=0.0),
        on_delivered=DeliveryRecord(db),
        rng=random.Random(3),
    )
    await nursery.start(outbox.run)
    master = sim.endpoints.master()
    manager = SyncManager(
        db,
        ENGINE,
        actor_settings=ACTORS,
        http=http,
        resolver=SimResolver(sim.endpoints),
        master=master,
        reporter=RpcStatusReporter(outbox),
        rng=random.Random(7),
    )
    await nursery.start(manager.run)
    lifecycle = SubcloudLifecycle(db, events=manager, endpoint_types=master.sync_endpoint_types)
    rpc = DcmanagerEndpoint(lifecycle).handlers()
    return Dcmanager(rpc, caster, outbox, manager, master.sync_endpoint_types)


async def managed(dcm: Dcmanager, db: Database, regions: Sequence[str]) -> None:
    """Added and managed by RPC, as dcmanager does; returns once every pair is in-sync."""
    for region in regions:
        await dcm.call(
            "add_subcloud", subcloud_name=region, sw_version="24.09", management_ip="127.0.0.1"
        )
        await dcm.call(
            "update_subcloud_states",
            subcloud_name=region,
            management_state="managed",
            availability_status="online",
        )
    pairs = {(r, e) for r in regions for e in dcm.endpoint_types}
    with trio.fail_after(30):
        while not pairs <= {p for p, s in latest(dcm.caster).items() if s == IN}:
            await dcm.caster.until(casts=len(dcm.caster.casts) + 1)
        for region in regions:
            await wait_until(partial(_all_in_sync, db, region))


async def test_rpc_managed_subclouds_are_reported_by_cast_and_never_wait_for_the_broker(
    dcmanager: Dcmanager, sim: SimCloud, db: Database
) -> None:
    caster, outbox, manager = dcmanager.caster, dcmanager.outbox, dcmanager.manager
    regions = sim.regions[:2]
    await managed(dcmanager, db, regions)
    pairs = {(r, e) for r in regions for e in dcmanager.endpoint_types}
    announced = len(caster.casts)
    assert announced == len(pairs)  # one in-sync per pair, nothing before it

    # De-duplicated: more passes with nothing new cast nothing more.
    for region in regions:
        for ept in dcmanager.endpoint_types:
            manager.wake(region, ept)
        await manager.sync_now(region)
    assert len(caster.casts) == announced

    # The broker goes away. A pass still applies its work and ends: the user reaches the
    # subcloud, the bad request fails, and the out-of-sync report waits in the outbox.
    caster.down = True
    region = regions[0]
    uid = await master_user(sim, "during-outage")
    await db.enqueue_work([user_order(region, uid), user_order(region, "no-such-user")])
    with trio.fail_after(20):
        while outbox.waiting() == []:
            manager.wake(region, c.ENDPOINT_TYPE_IDENTITY)
            await manager.sync_now(region)
        await caster.until(attempts=len(caster.attempts) + 2)  # refused, and retried
    assert uid in sim.subcloud(region).identity.users
    [waiting] = outbox.waiting()
    assert (waiting.region, waiting.endpoint_type, waiting.status) == (
        region,
        c.ENDPOINT_TYPE_IDENTITY,
        OUT,
    )
    assert len(caster.casts) == announced
    assert (await reported(db, region))[c.ENDPOINT_TYPE_IDENTITY] == IN  # not delivered yet
    # The next passes neither block nor add a cast: the pair's status has not changed.
    manager.wake(region, c.ENDPOINT_TYPE_IDENTITY)
    with trio.fail_after(10):
        await manager.sync_now(region)
    assert len(outbox.waiting()) == 1

    # The broker is back: the report is cast, then recorded.
    caster.down = False
    with trio.fail_after(10):
        await caster.until(casts=announced + 1)
        await wait_until(lambda: _reported_is(db, region, c.ENDPOINT_TYPE_IDENTITY, OUT))
    assert caster.casts[-1].report == (region, c.ENDPOINT_TYPE_IDENTITY, OUT, True)
    assert outbox.waiting() == []

    # RPC delete: the actor stops and the pair is no longer reported.
    await dcmanager.call("del_subcloud", subcloud_name=region)
    assert region not in manager.regions()


def row_types(dcm: Dcmanager, region: str) -> tuple[str, ...]:
    """The endpoint types the region's sync actor works on (its copy of the subcloud row)."""
    handle = dcm.manager.handle(region)
    assert handle is not None
    return handle.subcloud.endpoint_types


async def _all_in_sync(db: Database, region: str) -> bool:
    return set((await reported(db, region)).values()) == {IN}


async def _reported_is(db: Database, region: str, ept: str, status: str) -> bool:
    return (await reported(db, region))[ept] == status


async def test_endpoint_types_removed_and_added_by_rpc_stop_and_start_their_sync(
    dcmanager: Dcmanager, sim: SimCloud, db: Database
) -> None:
    region = sim.regions[0]
    await managed(dcmanager, db, [region])
    identity = c.ENDPOINT_TYPE_IDENTITY
    await dcmanager.call(
        "remove_subcloud_sync_endpoint_type", subcloud_name=region, endpoint_type_list=[identity]
    )
    handle = dcmanager.manager.handle(region)
    assert handle is not None
    assert row_types(dcmanager, region) == (c.ENDPOINT_TYPE_PLATFORM,)
    assert identity not in handle.audit_at  # a fresh actor: no timer left for the pair
    uid = await master_user(sim, "not-synced")
    [result] = await db.enqueue_work([dataclasses.replace(user_order(region, uid), subcloud=None)])
    assert result.target_regions == ()  # work for every subcloud skips a type it does not sync
    passes = handle.passes
    dcmanager.manager.wake(region, identity)
    await dcmanager.manager.sync_now(region)
    assert handle.passes == passes  # nothing to sync for it
    assert uid not in sim.subcloud(region).identity.users

    # Added back: a fresh pair, audited at once (upstream enables and initial-syncs it),
    # which finds the user and brings the pair in-sync, announced by cast.
    casts = len(dcmanager.caster.casts)
    await dcmanager.call(
        "add_subcloud_sync_endpoint_type", subcloud_name=region, endpoint_type_list=[identity]
    )
    assert row_types(dcmanager, region) == (c.ENDPOINT_TYPE_PLATFORM, identity)
    with trio.fail_after(20):
        while uid not in sim.subcloud(region).identity.users:  # noqa: ASYNC110
            await trio.sleep(0.05)
        # Its row is fresh ("none" reported): announced again although it was in-sync before.
        while [cast for cast in dcmanager.caster.casts[casts:] if cast.report[1] == identity] == []:
            await dcmanager.caster.until(casts=len(dcmanager.caster.casts) + 1)
    assert [cast.report[:3] for cast in dcmanager.caster.casts[casts:]] == [(region, identity, IN)]
    [row] = [s for s in await db.list_subcloud_syncs(region) if s.endpoint_type == identity]
    assert row.audit_status == c.AUDIT_COMPLETED
