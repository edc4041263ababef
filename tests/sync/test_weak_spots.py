"""One test per weak spot of upstream HEAD that applies to this design, plus the upstream fixes
worth pinning (docs/behaviour.md#open-upstream, docs/behaviour.md#fixed-upstream).

The proxy weak spots (the proxy answers 2xx only after the commit; a failing enqueue gives a 5xx, an
overloaded one a 503 with Retry-After) are covered in ``tests/proxy/test_proxy_http.py``:
``test_client_is_answered_only_after_submit_returns``,
``test_failing_sink_gives_500_without_details`` and
``test_overloaded_sink_gives_503_with_retry_after``.

Tests that talk to the simulator over HTTP use real time but never sleep-and-hope: they wait for a
condition under an overall ``fail_after``. Windows that must stay quiet ("no more retries") are
closed by an event that proves they passed (``Engine.settle``, a count of passes or of tries),
and intervals are checked from below only: trio timers never fire early, so a lower bound holds
on a loaded machine too.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from dcorch import constants as c
from dcorch.db import Database, units_sync
from dcorch.db import units_requests as ur
from dcorch.db.database import DatabaseSeams
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.rows import RequestUpdate
from dcorch.db.runner import Execute, Unit
from dcorch.remote.clients import CloudClient, Record
from dcorch.sync.audit import PairAudit
from dcorch.sync.drivers import apply_request
from dcorch.sync.initial_sync import InitialSyncOutcome, run_initial_sync
from dcorch.sync.status import StatusBook
from dcorch.work import WorkOrder

from .conftest import ACTORS, ENGINE, DriverRig, Engine, wait_until
from .test_integration import create_master_user, started, user_order


def users_on(engine: Engine, region: str) -> dict[str, Any]:
    return engine.sim.subcloud(region).identity.users


def trigger_audit(engine: Engine, region: str, ept: str = c.ENDPOINT_TYPE_IDENTITY) -> None:
    handle = engine.manager.handle(region)
    assert handle is not None
    handle.audit_at[ept] = trio.current_time()
    engine.manager.wake(region, ept)


async def no_pending(engine: Engine, region: str, ept: str = c.ENDPOINT_TYPE_IDENTITY) -> bool:
    return not await engine.db.pending_requests(region, ept)


# docs/behaviour.md#lost-wake-up ------------------------------------------------------------------


async def test_1_no_lost_wakeup_under_writes_during_long_syncs(start_engine) -> None:
    """Writes landing while a pass runs are applied by that pass or the next, never by an audit.

    Audits are 1200 s apart and the safety sweep 600 s, so anything slower than the bound here
    would have had to wait for them.
    """
    engine = await started(start_engine)
    for region in engine.sim.regions:
        engine.sim.set_faults(region, latency_ms=15)  # every sync pass takes a while
    uids: list[str] = []

    async def writer(n: int) -> None:
        for i in range(8):
            uid = await create_master_user(engine, f"w{n}-{i}")
            await engine.db.enqueue_work([user_order(uid)])
            uids.append(uid)
            await trio.sleep(0.01 * (n + 1))

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(writer, n)
    with trio.fail_after(10):
        await wait_until(
            lambda: all(set(uids) <= set(users_on(engine, r)) for r in engine.sim.regions)
        )
    assert len(uids) == 24


# docs/behaviour.md#stuck-in-progress-state -------------------------------------------------------


async def test_2_stuck_in_progress_work_is_recovered_by_a_manager_restart(
    start_engine, sim, db: Database
) -> None:
    """A crash left an initial sync and a request ``in-progress``: a new manager finishes both."""
    stuck_init, stuck_request = sim.regions[0], sim.regions[1]
    for region in (stuck_init, stuck_request):
        await db.add_subcloud(region, software_version="24.09", management_ip="10.0.0.1")
        await db.update_subcloud_states(
            region, management_state=c.MANAGEMENT_MANAGED, availability_status=c.AVAILABILITY_ONLINE
        )
    await db.set_initial_sync_state(
        stuck_init, c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_IN_PROGRESS
    )
    await db.set_initial_sync_state(
        stuck_request, c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_COMPLETED, subsequent_sync=True
    )
    async with httpx.AsyncClient() as client:
        uid = await master_user(sim, client, "orphan")
    order = dataclasses.replace(user_order(uid), subcloud=stuck_request)
    await db.enqueue_work([order])
    [request] = await db.pending_requests(stuck_request, c.ENDPOINT_TYPE_IDENTITY)
    await db.update_requests([RequestUpdate(request.id, state=c.ORCH_REQUEST_IN_PROGRESS)])

    engine: Engine = await start_engine()
    with trio.fail_after(20):
        await engine.wait_enabled(stuck_init, stuck_request)
        await wait_until(lambda: uid in users_on(engine, stuck_request))
        await wait_until(lambda: no_pending(engine, stuck_request))
    assert (await db.get_subcloud(stuck_init)).subsequent_sync is True


async def master_user(sim: Any, client: httpx.AsyncClient, name: str) -> str:
    response = await client.post(
        f"{sim.endpoints.master_keystone}/users",
        json={"user": {"name": name, "password": "pw", "domain_id": "default"}},
        headers={"X-Auth-Token": sim.admin_token()},
    )
    response.raise_for_status()
    return str(response.json()["user"]["id"])


# docs/behaviour.md#uncounted-discrepancy-repairs -------------------------------------------------


async def audit(rig: DriverRig, ept: str = c.ENDPOINT_TYPE_IDENTITY) -> int:
    ctx = await rig.context()
    pair = PairAudit(rig.db, rig.region, ept, ctx.remote, rig.fresh_master(), rig.db)
    return (await pair.run()).findings


async def test_3_discrepancy_put_counts_and_marks_the_pair_requested(rig: DriverRig) -> None:
    admin = rig.cloud.identity.find_name("user", "default", "admin")
    assert admin is not None
    rig.cloud.identity.put("user", {**admin, "user": {**admin["user"], "extra": '{"d": 1}'}})
    await rig.db.update_subcloud_sync(
        rig.region, c.ENDPOINT_TYPE_IDENTITY, sync_request=c.SYNC_REQUEST_COMPLETED
    )
    assert await audit(rig) >= 1
    [pair] = [
        s
        for s in await rig.db.list_subcloud_syncs(rig.region)
        if s.endpoint_type == c.ENDPOINT_TYPE_IDENTITY
    ]
    assert pair.sync_request == c.SYNC_REQUEST_REQUESTED
    puts = [
        r
        for r in await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY)
        if r.operation_type == c.OPERATION_PUT
    ]
    assert [r.source_resource_id for r in puts] == [admin["user"]["id"]]


async def test_3_discrepancy_found_by_the_engine_is_applied_without_another_audit(
    start_engine,
) -> None:
    engine = await started(start_engine)
    region = engine.sim.regions[0]
    identity = engine.sim.subcloud(region).identity
    admin = identity.find_name("user", "default", "admin")
    assert admin is not None
    identity.put("user", {**admin, "user": {**admin["user"], "extra": '{"d": 1}'}})
    handle = engine.manager.handle(region)
    assert handle is not None
    audits = handle.audits
    trigger_audit(engine, region)
    with trio.fail_after(10):
        await wait_until(lambda: not engine.sim.differences([region]))
        await wait_until(lambda: no_pending(engine, region))
    assert handle.audits == audits + 1
    assert engine.sim.latest_status(region, c.ENDPOINT_TYPE_IDENTITY) == "in-sync"


# docs/behaviour.md#global-failed-request-cleanup -------------------------------------------------


async def test_4_failed_request_cleanup_is_per_subcloud(rig: DriverRig) -> None:
    other = rig.sim.regions[1]
    await rig.db.add_subcloud(other, software_version="24.09", management_ip="10.0.0.2")
    for region in (rig.region, other):
        order = dataclasses.replace(user_order(f"gone-{region}"), subcloud=region)
        await rig.db.enqueue_work([order])
        [request] = await rig.db.pending_requests(region, c.ENDPOINT_TYPE_IDENTITY)
        await rig.db.update_requests([RequestUpdate(request.id, state=c.ORCH_REQUEST_FAILED)])
    await audit(rig)
    failed = (c.ORCH_REQUEST_FAILED,)
    assert await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY, states=failed) == []
    [kept] = await rig.db.pending_requests(other, c.ENDPOINT_TYPE_IDENTITY, states=failed)
    assert kept.source_resource_id == f"gone-{other}"


# docs/behaviour.md#retry-storm -------------------------------------------------------------------


def injected_errors(engine: Engine, region: str) -> int:
    counters = engine.sim.subcloud(region).counters or {}
    return sum(n for route, n in counters.items() if "<injected error>" in route)


SWEEP_TICKS = 10


async def test_5_failing_subcloud_is_not_retried_in_a_storm(start_engine) -> None:
    """A failed request stays failed however often its pair is looked at (upstream retried
    failed pairs on every 5 s tick).

    The safety sweep ticks every 0.1 s here and each tick runs a pass of both pairs, so the
    window is counted in passes that saw the failed request: a pass that retried it, or any
    timer that re-queued it at one of the engine's intervals (all 0.2 s or less here), shows
    up as a new injected error.
    """
    engine = await started(
        start_engine,
        request_retry_backoff=0.05,
        request_retry_backoff_max=0.1,
        offline_retry_interval=0.2,
        safety_sweep_interval=0.1,
    )
    bad = engine.sim.regions[0]
    engine.sim.set_faults(bad, error_rate=1.0, error_status=500)
    uid = await create_master_user(engine, "stormy")
    await engine.db.enqueue_work([user_order(uid)])
    failed = (c.ORCH_REQUEST_FAILED,)

    async def is_failed() -> bool:
        return bool(await engine.db.pending_requests(bad, c.ENDPOINT_TYPE_IDENTITY, states=failed))

    with trio.fail_after(10):
        await wait_until(is_failed)
    await engine.settle(bad)  # the pass that failed it is over
    attempts = injected_errors(engine, bad)
    assert 1 <= attempts <= ENGINE.request_max_attempts
    handle = engine.manager.handle(bad)
    assert handle is not None
    assert c.ENDPOINT_TYPE_IDENTITY in handle.subcloud.endpoint_types
    passes = handle.passes
    pairs = len(handle.subcloud.endpoint_types)
    with trio.fail_after(10):  # SWEEP_TICKS sweeps, each a pass of every pair
        await wait_until(lambda: handle.passes >= passes + SWEEP_TICKS * pairs)
    await engine.settle(bad)
    assert injected_errors(engine, bad) == attempts
    assert await engine.db.pending_requests(bad, c.ENDPOINT_TYPE_IDENTITY, states=failed)


OFFLINE_RETRY = 0.2
OFFLINE_TRIES = 5


async def test_5_unreachable_subcloud_is_retried_at_the_offline_interval(start_engine, sim) -> None:
    """One try per ``offline_retry_interval``, not a burst per request or a spin.

    The request back-off is made tiny, so a burst of per-request retries would show up as gaps
    far below the interval; trio timers never fire early, so every gap of the real behaviour
    is at least the interval.
    """
    down = sim.regions[0]
    tried: list[float] = []
    watched: list[str] = []

    async def timing(ctx: Any, request: Any) -> None:
        if ctx.region == down and request.source_resource_id in watched:
            tried.append(trio.current_time())
        await apply_request(ctx, request)

    settings = dataclasses.replace(
        ENGINE,
        offline_retry_interval=OFFLINE_RETRY,
        request_retry_backoff=0.01,
        request_retry_backoff_max=0.02,
    )
    engine: Engine = await start_engine(settings=settings, driver=timing)
    await engine.manage(*sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*sim.regions)
    sim.set_faults(down, offline=True)
    uid = await create_master_user(engine, "far")
    watched.append(uid)
    await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(10):  # a retry at the default 30 s (or none) never gets there
        await wait_until(lambda: len(tried) >= OFFLINE_TRIES)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried)]
    assert min(gaps) >= OFFLINE_RETRY - 1e-6, gaps
    [request] = await engine.db.pending_requests(down, c.ENDPOINT_TYPE_IDENTITY)
    assert request.state != c.ORCH_REQUEST_FAILED  # each try was given back
    sim.clear_faults(down)
    with trio.fail_after(10):
        await wait_until(lambda: uid in users_on(engine, down))


# docs/behaviour.md#spinning-on-database-errors ---------------------------------------------------


class FlakyReads:
    """Pending-request reads fail while ``broken``: a store fault seam that notes, per region,
    when each failed read was made."""

    def __init__(self) -> None:
        self.broken = False
        self.failed: dict[str, list[float]] = {}

    def wrap(self, execute: Execute) -> Execute:
        async def flaky(fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
            if self.broken and fn is units_sync.pending_requests_many:
                self._note({region for region, _ in args[0]})
            elif self.broken and fn is ur.pending_requests:
                self._note({args[0]})
            else:
                return await execute(fn, args, write)
            raise DatabaseUnavailable("database is locked")

        return flaky

    def _note(self, regions: set[str]) -> None:
        for region in regions:
            self.failed.setdefault(region, []).append(trio.current_time())


DB_BACKOFF = 0.05
DB_BACKOFF_CAP = 0.4
DB_FAILURES = 5


async def test_6_sync_loops_do_not_spin_on_database_errors(start_engine) -> None:
    """Each failed pass of an actor waits ``min(cap, backoff * 2**(n-1))`` before the next one.

    Counted in failed reads per region: trio timers never fire early, so the gaps are lower
    bounds; a spin, a fixed delay or a crash-and-restart loop breaks them (or the restart
    counts).
    """
    flaky = FlakyReads()
    engine: Engine = await start_engine(
        settings=dataclasses.replace(
            ENGINE, request_retry_backoff=DB_BACKOFF, offline_retry_interval=DB_BACKOFF_CAP
        ),
        seams=DatabaseSeams(wrap_execute=flaky.wrap),
        actor_settings=dataclasses.replace(ACTORS, restart_max=5),
    )
    await engine.manage(*engine.sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*engine.sim.regions)
    flaky.broken = True
    uid = await create_master_user(engine, "dberr")
    await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(10):
        await wait_until(
            lambda: all(len(flaky.failed.get(r, ())) >= DB_FAILURES for r in engine.sim.regions)
        )
    expected = [min(DB_BACKOFF_CAP, DB_BACKOFF * 2 ** (n - 1)) for n in range(1, DB_FAILURES)]
    for region in engine.sim.regions:
        times = flaky.failed[region][:DB_FAILURES]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(g >= e - 1e-6 for g, e in zip(gaps, expected, strict=True)), (region, gaps)
    flaky.broken = False
    with trio.fail_after(10):
        await wait_until(lambda: all(uid in users_on(engine, r) for r in engine.sim.regions))
    assert engine.manager_restarts() == 0
    assert sum(child.restarts for child in engine.manager.snapshot().children) == 0


# docs/behaviour.md#no-job-coalescing -------------------------------------------------------------


async def test_7_jobs_are_not_coalesced_but_replayed_in_order(start_engine) -> None:
    """Every change is its own job, applied in id order; the final state is the last change.

    A create reads the master's record when it is applied (docs/behaviour.md#identity-driver), so a
    burst that ends with the object deleted on the master is replayed as patch/delete of what the
    subcloud has.
    """
    engine = await started(start_engine)
    uid = await create_master_user(engine, "bursty")
    orders = [user_order(uid)]
    for i in range(4):
        body = {"user": {"description": f"v{i}"}}
        await engine.master_call("PATCH", f"users/{uid}", json=body)
        orders.append(user_order(uid, c.OPERATION_PATCH, body))
    await engine.db.enqueue_work(orders)
    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions, timeout=15)
    last = {"user": {"description": "v4"}}
    await engine.master_call("PATCH", f"users/{uid}", json=last)
    await engine.master_call("DELETE", f"users/{uid}")
    await engine.db.enqueue_work(
        [user_order(uid, c.OPERATION_PATCH, last), user_order(uid, c.OPERATION_DELETE)]
    )
    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions, timeout=15)
    for region in engine.sim.regions:
        ops = [
            o["op"]
            for o in engine.sim.subcloud(region).operations
            if o.get("id") == uid and o["op"] in {"create_user", "update_user", "delete_user"}
        ]
        assert ops == ["create_user"] + ["update_user"] * 5 + ["delete_user"]
        assert uid not in users_on(engine, region)


# docs/behaviour.md#orphaned-requests-after-delete, upstream bd2b5b78/3608a0d8 --------------------


async def test_8_deleting_a_subcloud_removes_its_requests_and_readding_uses_the_new_id(
    db: Database,
) -> None:
    await db.add_subcloud("sc", software_version="24.09", management_ip="10.0.0.9")
    await db.enqueue_work([dataclasses.replace(user_order("u1"), subcloud="sc")])
    await db.upsert_subcloud_resource("sc", c.RESOURCE_USERS, "u1", "u1")
    await db.delete_subcloud("sc")
    counts = await db.count_requests_by_state()
    assert sum(counts.values()) == 0
    await db.add_subcloud("sc", software_version="24.09", management_ip="10.0.0.9")
    new_id = (await db.get_subcloud("sc")).id  # SQLite may reuse the old id: nothing stale
    assert await db.pending_requests("sc", c.ENDPOINT_TYPE_IDENTITY) == []
    assert await db.list_subcloud_resources("sc") == []
    row = await db.upsert_subcloud_resource("sc", c.RESOURCE_USERS, "u1", "u1")
    assert row.subcloud_id == new_id


# docs/behaviour.md#get-then-save-races -----------------------------------------------------------


async def test_9_unmanage_during_initial_sync_leaves_subsequent_sync_false(rig: DriverRig) -> None:
    db, region = rig.db, rig.region
    await db.update_subcloud_states(region, management_state=c.MANAGEMENT_UNMANAGED)
    await db.update_subcloud_states(region, management_state=c.MANAGEMENT_MANAGED)
    row = await db.get_subcloud(region)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_REQUESTED, False)
    ctx = await rig.context()

    @dataclasses.dataclass(frozen=True)
    class UnmanagedMidway(CloudClient):
        """The subcloud is unmanaged while its identity is being reconciled."""

        async def list_records(self, kind: str) -> list[Record]:
            if kind == "users":
                await db.update_subcloud_states(region, management_state=c.MANAGEMENT_UNMANAGED)
            return await super().list_records(kind)

    remote = UnmanagedMidway(
        ctx.remote.http, ctx.remote.keystone, ctx.remote.sysinv, ctx.remote.dcdbsync
    )
    outcome = await run_initial_sync(db, row, remote, rig.master)
    assert outcome is InitialSyncOutcome.CANCELLED
    row = await db.get_subcloud(region)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, False)


# docs/behaviour.md#stop-check-ignores-management-state -------------------------------------------


async def test_11_unmanage_stops_a_running_sync_promptly(start_engine, sim) -> None:
    """An unmanage stops the pass in hand instead of waiting for it to end.

    The subcloud's second request hangs on the wire for good, so a stop that awaited the pass
    would never return: the request must be cancelled, and nothing after it applied.
    """
    region = sim.regions[0]
    ours: set[str] = set()
    landed: list[str] = []
    hung = trio.Event()
    cancelled: list[str] = []

    async def hangs_on_the_second(ctx: Any, request: Any) -> None:
        mine = ctx.region == region and request.source_resource_id in ours
        if mine and landed:
            hung.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(request.source_resource_id)
        await apply_request(ctx, request)
        if mine:
            landed.append(request.source_resource_id)

    engine: Engine = await start_engine(driver=hangs_on_the_second)
    await engine.manage(*sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*sim.regions)
    uids = [await create_master_user(engine, f"slow{i}") for i in range(20)]
    ours.update(uids)
    await engine.db.enqueue_work([user_order(uid) for uid in uids])
    with trio.fail_after(10):
        await hung.wait()
    await engine.db.update_subcloud_states(region, management_state=c.MANAGEMENT_UNMANAGED)
    # The actor's shutdown_timeout is 1 s; a stop that waited for the pass would hang here.
    with trio.fail_after(5):
        await engine.manager.subcloud_changed(region)
    assert cancelled == [uids[1]]  # the request in hand was cancelled, not awaited
    assert engine.manager.handle(region) is None
    assert region not in engine.manager.regions()
    assert landed == uids[:1]
    assert [u for u in uids if u in users_on(engine, region)] == landed
    with trio.fail_after(10):  # the other subclouds are not held up
        await engine.sim.wait_converged(sim.regions[1:], timeout=10)


async def test_11_unmanage_ends_the_pass_at_its_next_request(start_engine, sim) -> None:
    """The request in hand finishes; none after it starts (the actor is not left to run its
    queue until the shutdown deadline)."""
    region = sim.regions[0]
    ours: set[str] = set()
    started_here: list[str] = []
    slow = trio.Event()

    async def slow_second(ctx: Any, request: Any) -> None:
        if ctx.region == region and request.source_resource_id in ours:
            started_here.append(request.source_resource_id)
            if len(started_here) == 2:
                slow.set()
                await trio.sleep(0.3)
        await apply_request(ctx, request)

    engine: Engine = await start_engine(driver=slow_second)
    await engine.manage(*sim.regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*sim.regions)
    uids = [await create_master_user(engine, f"next{i}") for i in range(20)]
    ours.update(uids)
    await engine.db.enqueue_work([user_order(uid) for uid in uids])
    with trio.fail_after(10):
        await slow.wait()
    await engine.db.update_subcloud_states(region, management_state=c.MANAGEMENT_UNMANAGED)
    with trio.fail_after(5):
        await engine.manager.subcloud_changed(region)
    assert started_here == uids[:2]
    assert [u for u in uids if u in users_on(engine, region)] == uids[:2]


# docs/behaviour.md#substring-match-of-disabled-audit-endpoints -----------------------------------


@pytest.mark.parametrize(
    ("disabled", "audited"),
    [((c.ENDPOINT_TYPE_IDENTITY,), False), (("identity_openstack",), True), (("ident",), True)],
)
async def test_12_disable_audit_endpoints_is_an_exact_list(
    start_engine, disabled: tuple[str, ...], audited: bool
) -> None:
    engine = await started(start_engine, disable_audit_endpoints=disabled)
    region = engine.sim.regions[0]
    uid = await create_master_user(engine, "drift")
    await engine.db.enqueue_work([user_order(uid)])
    with trio.fail_after(20):
        await engine.sim.wait_converged(engine.sim.regions, timeout=15)
    engine.sim.subcloud(region).identity.remove("user", uid)
    handle = engine.manager.handle(region)
    assert handle is not None
    audits = handle.audits
    due = trio.current_time()
    trigger_audit(engine, region)
    if audited:
        with trio.fail_after(10):
            await wait_until(lambda: uid in users_on(engine, region))
    else:
        # An audit that ran would queue the repair and the same wake-up's pass would apply it.
        with trio.fail_after(10):
            await engine.settle(region)
        # it came due and was put off by a full interval, without running
        assert handle.audit_at[c.ENDPOINT_TYPE_IDENTITY] >= due + ENGINE.audit_interval
        assert handle.audits == audits
        assert await no_pending(engine, region)
        assert uid not in users_on(engine, region)


# docs/behaviour.md#fixed-upstream ----------------------------------------------------------------


class Reports:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bool]] = []

    async def report(self, region: str, endpoint_type: str, status: str, alarmable: bool) -> bool:
        self.sent.append((endpoint_type, status, alarmable))
        return True


async def test_status_reported_once_per_change_and_reannounced_at_most_hourly(
    db: Database,
) -> None:
    await db.add_subcloud("sc", software_version="24.09", management_ip="10.0.0.9")
    now = [datetime(2026, 1, 1)]
    reports = Reports()
    book = StatusBook(db, reports, "sc", dedup_seconds=3600, wall_clock=lambda: now[0])
    book.load(await db.list_subcloud_syncs("sc"))
    ept = c.ENDPOINT_TYPE_IDENTITY

    async def tick(minutes: int, in_sync: bool) -> None:
        now[0] += timedelta(minutes=minutes)
        await book.update(ept, in_sync, True, managed=True)

    for minutes in (0, 20, 20, 19):
        await tick(minutes, True)
    assert reports.sent == [(ept, "in-sync", True)]
    await tick(2, True)  # 61 minutes after the first report
    await tick(1, False)  # a change is sent at once
    await tick(1, True)
    assert [s for _, s, _ in reports.sent] == ["in-sync", "in-sync", "out-of-sync", "in-sync"]
    await book.update(ept, False, True, managed=False)  # unmanaged: never reported
    assert len(reports.sent) == 4
    [row] = [r for r in await db.list_subcloud_syncs("sc") if r.endpoint_type == ept]
    assert (row.sync_status_reported, row.sync_status_report_time) == ("in-sync", now[0])


async def test_remanaged_subcloud_is_reported_again(start_engine) -> None:
    engine = await started(start_engine)
    region = engine.sim.regions[0]
    for ept in c.SYNC_ENDPOINT_TYPES:
        assert [r["sync_status"] for r in engine.sim.status_reports(region, ept)] == ["in-sync"]
    await engine.db.update_subcloud_states(region, management_state=c.MANAGEMENT_UNMANAGED)
    await engine.manager.subcloud_changed(region)
    await engine.db.update_subcloud_states(region, management_state=c.MANAGEMENT_MANAGED)
    await engine.manager.subcloud_changed(region)

    def reported_twice(ept: str) -> bool:
        return len(engine.sim.status_reports(region, ept)) == 2

    with trio.fail_after(20):
        for ept in c.SYNC_ENDPOINT_TYPES:
            await wait_until(functools.partial(reported_twice, ept))
    for ept in c.SYNC_ENDPOINT_TYPES:
        assert engine.sim.status_reports(region, ept)[-1]["sync_status"] == "in-sync"


async def test_offline_online_skips_reconciliation_but_redistributes_keys_and_audits(
    start_engine,
) -> None:
    engine = await started(start_engine)
    region = engine.sim.regions[0]
    cloud = engine.sim.subcloud(region)
    handle = engine.manager.handle(region)
    assert handle is not None
    audits = handle.audits
    replaced = [o for o in cloud.operations if o["op"].startswith("replace_")]
    key_posts = [o for o in cloud.operations if o["op"] == "post_fernet_repo"]
    for availability in (c.AVAILABILITY_OFFLINE, c.AVAILABILITY_ONLINE):
        await engine.db.update_subcloud_states(region, availability_status=availability)
        await engine.manager.subcloud_changed(region)
    with trio.fail_after(20):
        await wait_until(
            lambda: (
                len([o for o in cloud.operations if o["op"] == "post_fernet_repo"])
                == len(key_posts) + 1
            )
        )
        await wait_until(lambda: handle.audits >= audits + len(c.SYNC_ENDPOINT_TYPES))
    assert [o for o in cloud.operations if o["op"].startswith("replace_")] == replaced
    row = await engine.db.get_subcloud(region)
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_COMPLETED, True)


async def test_fernet_only_backlog_is_out_of_sync_but_not_alarmable(start_engine) -> None:
    engine = await started(start_engine, offline_retry_interval=0.2)
    down = engine.sim.regions[0]
    engine.sim.set_faults(down, offline=True)
    keys = {str(k): v for k, v in engine.sim.master.platform.fernet_keys.items()}
    order = WorkOrder(
        c.ENDPOINT_TYPE_PLATFORM, c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_PUT, json.dumps(keys)
    )
    await engine.db.enqueue_work([order])
    ept = c.ENDPOINT_TYPE_PLATFORM
    with trio.fail_after(10):
        await wait_until(lambda: engine.sim.latest_status(down, ept) == "out-of-sync")
    assert engine.sim.status_reports(down, ept)[-1]["alarmable"] is False
    engine.sim.clear_faults(down)
    with trio.fail_after(10):
        await wait_until(lambda: engine.sim.latest_status(down, ept) == "in-sync")


async def test_filtered_users_are_never_synced(rig: DriverRig) -> None:
    await audit(rig)
    for request in await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY):
        await apply_request(await rig.context(), request)
        await rig.db.update_requests([RequestUpdate(request.id, state=c.ORCH_REQUEST_COMPLETED)])
    names = ["usm", "dcorch", "dcdbsync", "smapi", "cinderRegionOne", "kept"]
    ids = {}
    for name in names:
        if rig.sim.master.identity.find_name("user", "default", name) is None:
            body = {"user": {"name": name, "password": "x", "domain_id": "default"}}
            ids[name] = (await rig.master_call("POST", "users", json=body)).json()["user"]["id"]
    assert await audit(rig) == 1
    [request] = await rig.db.pending_requests(rig.region, c.ENDPOINT_TYPE_IDENTITY)
    assert (request.resource_type, request.source_resource_id) == ("users", ids["kept"])
