"""``request_time_budget`` counts from the request's creation; master outages end in ``timed-out``.

Exact virtual times on trio's mock clock: a sync pass (:class:`PairSync`) with the real master
and subcloud clients over HTTP to the simulator, the real :class:`MasterHealth`, and the pair's
requests in a small in-memory table. The database runs units on a thread of its own, and a mock
clock that jumps whenever trio waits would jump during every query, so these timing tests keep
the requests in memory; the assembled system is tested with the real database in
``tests/integration/test_master_outage.py``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.rows import PendingRequest, RequestUpdate
from dcorch.remote.clients import CachedMasterClient, CloudClient
from dcorch.remote.http import Credentials, HttpSession
from dcorch.remote.master_health import MasterHealth
from dcorch.settings import EngineSettings
from dcorch.sim import SimCloud, open_sim_cloud
from dcorch.sim.records import make_user
from dcorch.sync.pair_sync import PairSync

BUDGET = 60.0
SETTINGS = EngineSettings(
    request_time_budget=BUDGET,
    request_retry_backoff=1.0,
    request_retry_backoff_max=8.0,
    request_max_attempts=3,
    offline_retry_interval=30.0,
    subcloud_http_timeout=10.0,
)
BASE = datetime(2025, 1, 1)


def wall() -> datetime:
    """The wall clock following trio's mock clock (``created_at`` and deadlines share it)."""
    return BASE + timedelta(seconds=trio.current_time())


class Requests:
    """One pair's requests: the two calls a sync pass makes, and each change with its time."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.rows: dict[int, PendingRequest] = {}
        self.history: list[tuple[float, int, str, int]] = []
        """(virtual time, id, state, try_count) after each update that changed the state."""

    def add(self, user_id: str) -> PendingRequest:
        rid = len(self.rows) + 1
        row = PendingRequest(
            id=rid,
            uuid=f"req-{rid}",
            state=c.ORCH_REQUEST_QUEUED,
            try_count=0,
            target_region_name=self.region,
            orch_job_id=rid,
            endpoint_type=c.ENDPOINT_TYPE_IDENTITY,
            resource_type=c.RESOURCE_USERS,
            operation_type=c.OPERATION_POST,
            source_resource_id=user_id,
            resource_info="{}",
            resource_id=rid,
            master_id=user_id,
            created_at=wall(),
            updated_at=None,
        )
        self.rows[rid] = row
        return row

    async def pending_requests(
        self, region: str, endpoint_type: str, *, states: Sequence[str]
    ) -> list[PendingRequest]:
        await trio.lowlevel.checkpoint()
        return [r for r in self.rows.values() if r.state in states]

    async def update_requests(self, updates: Sequence[RequestUpdate]) -> list[int]:
        await trio.lowlevel.checkpoint()
        for u in updates:
            old = self.rows[u.id]
            new = dataclasses.replace(
                old,
                state=u.state or old.state,
                try_count=old.try_count if u.try_count is None else u.try_count,
            )
            self.rows[u.id] = new
            if new.state != old.state or u.state == c.ORCH_REQUEST_IN_PROGRESS:
                self.history.append((trio.current_time(), u.id, new.state, new.try_count))
        return [u.id for u in updates]

    def final(self) -> dict[int, tuple[float, str]]:
        """Request id -> (time, state) of its last change."""
        return {rid: (t, state) for t, rid, state, _ in self.history}


@dataclasses.dataclass
class Rig:
    sim: SimCloud
    health: MasterHealth
    master: CachedMasterClient
    remote: CloudClient
    requests: Requests
    sent: list[tuple[float, str]]
    pair: PairSync

    def with_settings(self, settings: EngineSettings) -> None:
        """Passes from now on run with ``settings``."""
        self.pair = PairSync(
            cast(Database, self.requests),
            settings,
            self.requests.region,
            c.ENDPOINT_TYPE_IDENTITY,
            limiter=trio.CapacityLimiter(10),
            rng=random.Random(1),
            wall_clock=wall,
        )

    async def apply(self, request: PendingRequest) -> None:
        """A user create as the identity driver does it: the master's record, to the subcloud."""
        record = await self.master.get_record("users", request.source_resource_id)
        await self.remote.create_record("users", record)

    async def run_like_the_actor(self) -> None:
        """Passes until nothing is left to retry, each when the sync actor would start it."""
        while True:
            result = await self.pair.run_pass(self.apply)
            if result.master_retry_at is not None:
                await trio.sleep_until(result.master_retry_at)
            elif not result.reachable:
                await trio.sleep(SETTINGS.offline_retry_interval)
            else:
                return

    def sent_to(self, fragment: str) -> list[float]:
        return [t for t, url in self.sent if fragment in url]

    def master_user(self, name: str) -> str:
        return f"id-{name}"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """Each test asks for ``autojump_clock`` itself: pytest-trio takes the clock from the test."""
    async with open_sim_cloud(subclouds=1, port=0) as sim:
        sent: list[tuple[float, str]] = []

        async def note(request: httpx.Request) -> None:
            sent.append((trio.current_time(), str(request.url)))

        creds = Credentials(sim.admin.username, sim.admin.password, sim.admin.project_name)
        async with httpx.AsyncClient(event_hooks={"request": [note]}) as client:
            http = HttpSession(client, creds, SETTINGS.subcloud_http_timeout)
            health = MasterHealth(
                sim.endpoints.master(),
                backoff=SETTINGS.request_retry_backoff,
                backoff_max=SETTINGS.request_retry_backoff_max,
            )
            region = sim.regions[0]
            remote = CloudClient(
                http,
                sim.endpoints.subcloud_keystone(region),
                sim.endpoints.subcloud_sysinv(region),
                sim.endpoints.subcloud_dcdbsync(region),
            )
            requests = Requests(region)
            master = CachedMasterClient.for_master(http, sim.endpoints.master(), health)
            for name in ("alice", "bob"):  # users the master has and the subcloud lacks
                sim.master.identity.put("user", make_user(name, "hash", 0.0, user_id=f"id-{name}"))
            rig = Rig(sim, health, master, remote, requests, sent, cast(PairSync, None))
            rig.with_settings(SETTINGS)
            yield rig


async def test_master_outage_ends_the_request_timed_out_at_creation_plus_budget(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    rig.sim.set_master_faults("dcdbsync", offline=True)
    request = rig.requests.add(rig.master_user("alice"))
    await rig.run_like_the_actor()
    assert rig.requests.final() == {request.id: (t0 + BUDGET, c.ORCH_REQUEST_TIMED_OUT)}
    # One call per backoff step (1, 2, 4, then 8 s), none in between; the last step would be
    # at 63 s, past the deadline, so the pass at 60 s ends it without a call.
    probes = [t - t0 for t in rig.sent_to("/master/dcdbsync/")]
    assert probes == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0, 47.0, 55.0]
    # Ten tries against a 3-attempt limit, and not failed: the outage was given its attempts back.
    [last] = [h for h in rig.requests.history if h[2] == c.ORCH_REQUEST_TIMED_OUT]
    assert last[3] == 1
    assert not rig.health.is_up
    assert rig.sent_to(f"/subclouds/{rig.requests.region}/") == []  # the subcloud was never blamed


async def test_master_back_before_the_budget_completes_the_work_in_order(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    rig.sim.set_master_faults("dcdbsync", offline=True)
    first = rig.requests.add(rig.master_user("alice"))
    second = rig.requests.add(rig.master_user("bob"))

    async def recover() -> None:
        await trio.sleep(20.0)
        rig.sim.clear_master_faults("dcdbsync")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover)
        await rig.run_like_the_actor()
    # The probe after the recovery (at 7 + 8 = 15, then 23 s) succeeds; both apply at once.
    assert rig.requests.final() == {
        first.id: (t0 + 23.0, c.ORCH_REQUEST_COMPLETED),
        second.id: (t0 + 23.0, c.ORCH_REQUEST_COMPLETED),
    }
    users = rig.sim.subcloud(rig.requests.region).identity.users
    assert {"id-alice", "id-bob"} <= set(users)
    assert rig.health.is_up


async def test_the_budget_counts_from_creation_not_from_the_first_attempt(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """A request that waited 50 s in the queue has 10 s left, whatever its attempts."""
    t0 = trio.current_time()
    region = rig.requests.region
    rig.sim.set_faults(region, error_rate=1.0, error_status=500)
    request = rig.requests.add(rig.master_user("alice"))
    await trio.sleep(50.0)
    rig.with_settings(dataclasses.replace(SETTINGS, request_max_attempts=100))
    await rig.run_like_the_actor()
    assert rig.requests.final() == {request.id: (t0 + BUDGET, c.ORCH_REQUEST_TIMED_OUT)}
    attempts = rig.sent_to(f"/subclouds/{region}/")
    assert attempts[0] == t0 + 50.0
    assert all(t < t0 + BUDGET for t in attempts)


@pytest.mark.parametrize(
    "fault",
    [{"offline": True}, {"error_rate": 1.0, "error_status": 503}],
    ids=["offline", "answering-503"],
)
async def test_an_unreachable_subcloud_keeps_its_request_past_the_budget_then_applies_it(
    rig: Rig, autojump_clock: trio.testing.MockClock, fault: dict[str, Any]
) -> None:
    """As upstream, an unreachable subcloud's queue waits for it; the late request gets one try.

    A 503 (its DB-sync agent cannot reach the keystone beside it) is unreachable too.
    """
    t0 = trio.current_time()
    region = rig.requests.region
    rig.sim.set_faults(region, **fault)
    request = rig.requests.add(rig.master_user("alice"))

    async def recover() -> None:
        await trio.sleep(100.0)
        rig.sim.clear_faults(region)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover)
        await rig.run_like_the_actor()
    tries = [t - t0 for t, rid, state, _ in rig.requests.history if state == "in-progress"]
    assert tries == [0.0, 30.0, 60.0, 90.0, 120.0]  # every offline_retry_interval
    assert rig.requests.final() == {request.id: (t0 + 120.0, c.ORCH_REQUEST_COMPLETED)}
    assert all(tc == 1 for *_, tc in rig.requests.history)  # each unreachable try given back
    assert rig.health.is_up


async def test_a_late_request_that_then_finds_the_master_down_is_timed_out_at_once(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    region = rig.requests.region
    rig.sim.set_faults(region, offline=True)
    request = rig.requests.add(rig.master_user("alice"))

    async def swap() -> None:
        await trio.sleep(100.0)
        rig.sim.clear_faults(region)
        rig.sim.set_master_faults("dcdbsync", offline=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(swap)
        await rig.run_like_the_actor()
    assert rig.requests.final() == {request.id: (t0 + 120.0, c.ORCH_REQUEST_TIMED_OUT)}
    assert rig.sent_to("/master/dcdbsync/")[-1] == t0 + 120.0
