"""Actor faults: exceptions injected into a sync actor and into the dispatcher.

The whole system runs in-process (``open_dcorch``) and every command goes through the identity
proxy, so "acknowledged" means a 201 from the proxy. Faults are injected through seams, never
by editing code:

* sync actor: the harness's ``driver=`` (the function that applies one request) raises for one
  chosen request a few times; the actor crashes, its supervisor restarts it, and the restarted
  actor takes the request up again from the database;
* dispatcher, answered error: the store's enqueue transaction raises once (the database's
  ``wrap_execute`` seam); the dispatcher answers that caller with the error (the proxy turns it
  into a 5xx) and keeps serving;
* dispatcher, ambiguous failure: the enqueue transaction commits a batch and then raises; the
  dispatcher re-commits the batch one submission at a time, and the ``job_uuid`` each order got
  at submit makes that a no-op for work already written (no duplicate jobs);
* dispatcher, crash: the commit feed (the database's ``feed`` seam) fails once after a commit;
  the database's supervisor restarts the ``dispatcher`` task and the commands queued meanwhile
  are committed.

After each: every 201 has its ``orch_job`` and one ``orch_request`` per subcloud, nothing is
left pending, and the users reach every subcloud once each, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from actors import NodeSnapshot
from dcorch import constants as c
from dcorch.db.commits import CommitFeed, Committed
from dcorch.db.database import DatabaseSeams
from dcorch.db.errors import DatabaseUnavailable
from dcorch.db.runner import Execute, Unit
from dcorch.db.units_work import enqueue_work
from dcorch.harness import Dcorch, open_dcorch
from dcorch.sync.drivers import apply_request

from .conftest import REGIONS_3, fast_settings, work_view

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

FIGURES: dict[str, dict[str, Any]] = {}


def _walk(node: NodeSnapshot) -> Iterator[NodeSnapshot]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _node(tree: NodeSnapshot, name: str) -> NodeSnapshot:
    [node] = [n for n in _walk(tree) if n.name == name]
    return node


async def _ready(dc: Dcorch) -> None:
    """Every subcloud converged and enabled (initial sync completed), so each command's job has
    a request for all three."""
    await dc.wait_converged(timeout=60)
    with trio.fail_after(60):
        while True:
            rows = await dc.db.list_subclouds()
            if all(r.initial_sync_state == c.INITIAL_SYNC_COMPLETED for r in rows):
                return
            await trio.sleep(0.05)


async def _create_user(dc: Dcorch, name: str) -> tuple[int, str | None]:
    """POST /v3/users through the identity proxy: (status, user id if created)."""
    body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
    response = await dc.client.post(f"{dc.identity_url}/v3/users", json=body, headers=dc.auth)
    uid = response.json()["user"]["id"] if response.status_code == 201 else None
    return response.status_code, uid


async def _create_concurrently(dc: Dcorch, tag: str, clients: int, each: int) -> list[str]:
    """``clients`` concurrent clients, ``each`` users each; the ids of the 201s."""
    created: list[str] = []

    async def one(n: int) -> None:
        for i in range(each):
            status, uid = await _create_user(dc, f"{tag}-{n}-{i}")
            assert status == 201, (tag, n, i, status)
            assert uid is not None
            created.append(uid)

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(one, n)
    return created


async def _assert_durable_and_applied(dc: Dcorch, acknowledged: list[str]) -> dict[str, int]:
    """Every 201 has one job with a request per subcloud; all applied once on every subcloud."""
    view = await trio.to_thread.run_sync(work_view, dc.settings.database_url)
    for uid in acknowledged:
        jobs = [j for j in view.jobs_for(uid) if view.jobs[j][0] == c.RESOURCE_USERS]
        assert len(jobs) == 1, (uid, jobs)  # not lost, not written twice
        regions = sorted(region for region, _, _ in view.requests[jobs[0]])
        assert regions == list(REGIONS_3), (uid, regions)
    assert view.orphans == []
    assert dc.sim is not None
    with trio.fail_after(45):
        for region in REGIONS_3:
            while not set(acknowledged) <= set(dc.sim.subcloud(region).identity.users):  # noqa: ASYNC110
                await trio.sleep(0.05)
    with trio.fail_after(30):
        while True:
            live = await dc.db.count_requests_by_state()
            if not live.get(c.ORCH_REQUEST_QUEUED) and not live.get(c.ORCH_REQUEST_IN_PROGRESS):
                break
            await trio.sleep(0.05)
    assert not live.get(c.ORCH_REQUEST_FAILED), live
    for region in REGIONS_3:
        creates = [
            op["id"]
            for op in dc.sim.subcloud(region).operations
            if op.get("id") in acknowledged and op["op"].startswith("create")
        ]
        assert sorted(creates) == sorted(acknowledged), region  # each applied exactly once
    return live


@pytest.mark.timeout(120)
async def test_crashing_sync_actor_is_restarted_and_loses_nothing() -> None:
    # A crash counts as an attempt of the request being applied: at ``request_max_attempts``
    # the request is failed as a poison pill (so a request that always crashes its actor cannot
    # crash-loop it). Three crashes with six attempts allowed must end in the request applied.
    crashes = 3
    victim = "subcloud2"
    chosen: list[int] = []
    applied: dict[str, list[str]] = {region: [] for region in REGIONS_3}

    async def flaky(ctx: Any, request: Any) -> None:
        region = request.target_region_name
        if region == victim and request.resource_type == c.RESOURCE_USERS:
            if not chosen:
                chosen.append(request.id)
            if request.id == chosen[0] and len(chosen) <= crashes:
                chosen.append(request.id)
                raise RuntimeError(f"injected sync actor fault {len(chosen) - 1}")
        await apply_request(ctx, request)
        if request.resource_type == c.RESOURCE_USERS:
            applied[region].append(request.master_id)

    settings = fast_settings(subclouds=3).replace(engine={"request_max_attempts": crashes * 2})
    async with open_dcorch(settings, ephemeral_ports=True, driver=flaky) as dc:
        await _ready(dc)
        acknowledged = []
        for i in range(12):  # one client: the creation order is the order to apply in
            status, uid = await _create_user(dc, f"actor-fault-{i}")
            assert status == 201
            assert uid is not None
            acknowledged.append(uid)
        live = await _assert_durable_and_applied(dc, acknowledged)
        assert dc.sync_manager is not None
        tree = dc.sync_manager.snapshot()
        restarts = {region: _node(tree, region).restarts for region in REGIONS_3}
        last_error = _node(tree, victim).last_error or ""
        system_restarts = {n.name: n.restarts for n in _walk(dc.system.snapshot()) if n.restarts}

    assert len(chosen) == crashes + 1  # the chosen request failed ``crashes`` times, then applied
    assert restarts == {r: (crashes if r == victim else 0) for r in REGIONS_3}
    assert "injected sync actor fault" in last_error
    assert system_restarts == {}  # the crashes stayed inside the sync manager's tree
    for region in REGIONS_3:
        mine = [uid for uid in applied[region] if uid in acknowledged]
        assert mine == acknowledged, region  # once each, in request order
    FIGURES["sync_actor"] = {
        "acknowledged": len(acknowledged),
        "lost": 0,
        "injected": crashes,
        "restarts": restarts,
        "requests": live,
    }
    print(f"\nactor faults [sync actor]: {FIGURES['sync_actor']}")


class _EnqueueFaults:
    """Store seam: the first enqueue transaction fails (``mode="fail"``), or commits and then
    raises as if the answer was lost (``mode="ambiguous"``, on a batch of two or more)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.armed = False
        self.injected: list[int] = []

    def wrap(self, execute: Execute) -> Execute:
        async def faulty(fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
            if fn is not enqueue_work or not self.armed or self.injected:
                return await execute(fn, args, write)
            orders = args[0]
            if self.mode == "fail":
                self.injected.append(len(orders))
                raise DatabaseUnavailable("injected enqueue failure")
            await trio.sleep(0.05)  # let concurrent commands queue up into one batch
            results = await execute(fn, args, write)
            if len(orders) >= 2 and not self.injected:
                self.injected.append(len(orders))
                raise DatabaseUnavailable("injected: committed, but the answer was lost")
            return results

        return faulty


@pytest.mark.timeout(120)
async def test_enqueue_error_fails_that_caller_only() -> None:
    faults = _EnqueueFaults("fail")
    seams = DatabaseSeams(wrap_execute=faults.wrap)
    async with open_dcorch(fast_settings(subclouds=3), ephemeral_ports=True, seams=seams) as dc:
        await _ready(dc)
        faults.armed = True
        status, refused_uid = await _create_user(dc, "refused")
        acknowledged = await _create_concurrently(dc, "after-error", clients=4, each=5)
        await _assert_durable_and_applied(dc, acknowledged)
        view = await trio.to_thread.run_sync(work_view, dc.settings.database_url)
        dispatcher = _node(dc.db.snapshot(), "dispatcher")

    assert faults.injected == [1]
    assert 500 <= status < 600
    assert refused_uid is None
    # The refused command wrote nothing. Its user does exist at the master (the proxy forwarded
    # it before submitting), so the audit may repair that drift: single-subcloud jobs only.
    others = [
        j for j in view.jobs_for_type(c.RESOURCE_USERS) if view.jobs[j][1] not in acknowledged
    ]
    assert all(len(view.requests[j]) == 1 for j in others), others
    assert dispatcher.restarts == 0  # an answered error is not a crash
    FIGURES["enqueue_error"] = {
        "acknowledged": len(acknowledged),
        "lost": 0,
        "refused_5xx": 1,
        "audit_repair_jobs_for_refused": len(others),
        "dispatcher_restarts": dispatcher.restarts,
    }
    print(f"\nactor faults [enqueue error]: {FIGURES['enqueue_error']}")


@pytest.mark.timeout(120)
async def test_batch_failing_after_commit_writes_no_duplicates() -> None:
    faults = _EnqueueFaults("ambiguous")
    seams = DatabaseSeams(wrap_execute=faults.wrap)
    async with open_dcorch(fast_settings(subclouds=3), ephemeral_ports=True, seams=seams) as dc:
        await _ready(dc)
        faults.armed = True
        acknowledged = await _create_concurrently(dc, "ambiguous", clients=8, each=5)
        await _assert_durable_and_applied(dc, acknowledged)
        view = await trio.to_thread.run_sync(work_view, dc.settings.database_url)

    assert faults.injected, "no batch of two or more formed"
    assert len(view.jobs_for_type(c.RESOURCE_USERS)) == len(acknowledged) == 40
    FIGURES["ambiguous_batch"] = {
        "acknowledged": len(acknowledged),
        "lost": 0,
        "batch_committed_then_failed": faults.injected[0],
        "duplicate_jobs": 0,
    }
    print(f"\nactor faults [ambiguous batch]: {FIGURES['ambiguous_batch']}")


class _CrashingFeed(CommitFeed):
    """The dispatcher's commit feed, which fails once after publishing: a dispatcher bug."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.crashes = 0

    def publish(self, committed: Committed) -> None:
        super().publish(committed)
        if self.armed and not self.crashes:
            self.crashes += 1
            raise RuntimeError("injected dispatcher crash")


@pytest.mark.timeout(120)
async def test_crashed_dispatcher_is_restarted_and_loses_nothing() -> None:
    feed = _CrashingFeed()
    seams = DatabaseSeams(feed=feed)
    async with open_dcorch(fast_settings(subclouds=3), ephemeral_ports=True, seams=seams) as dc:
        await _ready(dc)
        feed.armed = True
        status, first = await _create_user(dc, "before-crash")
        assert status == 201  # committed and answered before the crash
        assert first is not None
        acknowledged = [first, *await _create_concurrently(dc, "crash", clients=6, each=5)]
        await _assert_durable_and_applied(dc, acknowledged)
        dispatcher = _node(dc.db.snapshot(), "dispatcher")

    assert feed.crashes == 1
    assert dispatcher.restarts == 1
    assert "injected dispatcher crash" in (dispatcher.last_error or "")
    assert dispatcher.state == "running"
    FIGURES["dispatcher_crash"] = {
        "acknowledged": len(acknowledged),
        "lost": 0,
        "dispatcher_restarts": dispatcher.restarts,
    }
    print(f"\nactor faults [dispatcher crash]: {FIGURES['dispatcher_crash']}")
