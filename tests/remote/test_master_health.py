"""The master's health tracker over real HTTP to the simulated master, on trio's mock clock.

A master service down is a :class:`MasterUnavailable` naming the dependency and the URL; while it
is down, calls fail at once except one probe per backoff step (doubling, capped); the first
success brings it back; each change of state is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
import trio.testing

from dcorch.remote.clients import CachedMasterClient, StatusReporter
from dcorch.remote.errors import MasterUnavailable, RemoteNotFound
from dcorch.remote.http import Credentials, HttpSession
from dcorch.remote.master_health import MasterHealth
from dcorch.sim import SimCloud, open_sim_cloud

BACKOFF = 1.0
BACKOFF_MAX = 4.0


@pytest.fixture
async def sim() -> AsyncIterator[SimCloud]:
    async with open_sim_cloud(subclouds=1, port=0) as cloud:
        yield cloud


class Sent:
    """Every request the engine's client puts on the wire, with its (virtual) time."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.calls.append((trio.current_time(), str(request.url)))

    def to(self, fragment: str) -> list[float]:
        return [t for t, url in self.calls if fragment in url]


@pytest.fixture
async def sent() -> Sent:
    return Sent()


@pytest.fixture
async def http(sim: SimCloud, sent: Sent) -> AsyncIterator[HttpSession]:
    creds = Credentials(sim.admin.username, sim.admin.password, sim.admin.project_name)
    async with httpx.AsyncClient(event_hooks={"request": [sent]}) as client:
        yield HttpSession(client, creds, timeout=10.0)


@pytest.fixture
def health(sim: SimCloud) -> MasterHealth:
    return MasterHealth(sim.endpoints.master(), backoff=BACKOFF, backoff_max=BACKOFF_MAX)


def master_client(sim: SimCloud, http: HttpSession, health: MasterHealth) -> CachedMasterClient:
    return CachedMasterClient.for_master(http, sim.endpoints.master(), health)


def lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


async def test_dbsync_down_is_named_probed_once_per_step_and_logged_once(
    sim: SimCloud,
    http: HttpSession,
    health: MasterHealth,
    sent: Sent,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO, logger="dcorch.remote.master_health")
    master = master_client(sim, http, health)
    recovered: list[tuple[float, str]] = []
    health.on_recovered(lambda dep: recovered.append((trio.current_time(), dep)))
    await master.list_records("users")  # a token is cached; all up
    sent.calls.clear()
    t0 = trio.current_time()
    sim.set_master_faults("dcdbsync", offline=True)

    with pytest.raises(MasterUnavailable) as info:
        await master.get_record("users", "nobody")
    assert info.value.dependency == "dbsync"
    assert info.value.url == f"{sim.endpoints.master_dcdbsync}/identity/users/nobody"
    assert info.value.reason == "RemoteProtocolError"
    assert info.value.retry_at == t0 + BACKOFF
    assert not health.is_up
    assert health.state("keystone").up

    # 200 pairs asking at once before the next step: nothing goes out, each told when to retry.
    async def ask() -> None:
        with pytest.raises(MasterUnavailable) as fast:
            await master.list_records("projects")  # a listing: no caching of errors either
        assert fast.value.retry_at == t0 + BACKOFF
        assert fast.value.url == f"{sim.endpoints.master_dcdbsync}/identity/users/nobody"

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(ask)

    # Keep asking every 0.25 s for 20 s: the calls that go out are the probes, at the steps.
    for _ in range(80):
        with pytest.raises(MasterUnavailable):
            await master.get_record("users", "nobody")  # not shared: each call its own
        await trio.sleep(0.25)
    probes = [t - t0 for t in sent.to("/master/dcdbsync/")]
    # 1 s, then doubling: +2, +4, capped at +4 (each probe asked at the next 0.25 s tick).
    assert probes == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0]
    assert health.state("dbsync").failures == len(probes)

    sim.clear_master_faults("dcdbsync")
    await trio.sleep_until(t0 + 23.0)
    with pytest.raises(RemoteNotFound):  # an answer: the service is back
        await master.get_record("users", "nobody")
    assert health.is_up
    assert recovered == [(t0 + 23.0, "dbsync")]
    assert lines(caplog, "master.down") == [
        f"master.down dependency=dbsync url={sim.endpoints.master_dcdbsync}/identity/users/nobody"
        " reason=RemoteProtocolError retry_in=1.0"
    ]
    [up] = lines(caplog, "master.up")
    assert up == (
        f"master.up dependency=dbsync url={sim.endpoints.master_dcdbsync} down_for=23.0 probes=7"
    )
    assert {d["dependency"]: v for d, v in health.failure_series()} == {
        "keystone": 0.0,
        "dbsync": 7.0,
        "sysinv": 0.0,
        "dcmanager": 0.0,
    }


async def test_keystone_down_blocks_every_master_call_and_its_probe_asks_keystone(
    sim: SimCloud,
    http: HttpSession,
    health: MasterHealth,
    sent: Sent,
    autojump_clock: trio.testing.MockClock,
) -> None:
    master = master_client(sim, http, health)
    reporter = StatusReporter(http, sim.endpoints.master(), health)
    sim.set_master_faults("keystone", error_rate=1.0, error_status=503)
    t0 = trio.current_time()
    with pytest.raises(MasterUnavailable) as info:
        await master.list_iusers()
    assert info.value.dependency == "keystone"
    assert info.value.url == f"{sim.endpoints.master_keystone}/auth/tokens"
    assert info.value.reason.startswith("503 ")
    # sysinv is fine, but nothing can authenticate: dcmanager's reports wait too, unsent.
    with pytest.raises(MasterUnavailable, match="master keystone unavailable"):
        await reporter.report(sim.regions[0], "identity", "in-sync", True)
    assert len(sent.calls) == 1
    status = health.status()
    assert status["status"] == "degraded"
    assert status["dependencies"]["keystone"]["status"] == "down"
    assert status["dependencies"]["keystone"]["next_probe_in"] == BACKOFF
    assert status["dependencies"]["sysinv"] == {"status": "up", "url": sim.endpoints.master_sysinv}

    sim.clear_master_faults()
    await trio.sleep_until(t0 + BACKOFF)
    tokens = http.token_requests
    await reporter.report(sim.regions[0], "identity", "in-sync", True)
    assert http.token_requests == tokens + 1  # the probe fetched a token: keystone was asked
    assert health.is_up
    assert sim.latest_status(sim.regions[0], "identity") == "in-sync"


async def test_an_answer_that_is_not_an_outage_keeps_the_master_up(
    sim: SimCloud, http: HttpSession, health: MasterHealth, autojump_clock: trio.testing.MockClock
) -> None:
    master = master_client(sim, http, health)
    with pytest.raises(RemoteNotFound) as info:
        await master.get_record("users", "no-such-user")
    assert info.value.url == f"{sim.endpoints.master_dcdbsync}/identity/users/no-such-user"
    assert health.is_up
    assert health.state("dbsync").failures == 0
    # and a 404 from the probe of a service that was down is an answer: it is back
    sim.set_master_faults("dcdbsync", timeout=True)
    t0 = trio.current_time()
    with pytest.raises(MasterUnavailable) as down:
        await master.get_record("users", "no-such-user")
    assert down.value.reason == "timed out"
    assert trio.current_time() - t0 == 10.0  # one HTTP timeout, not more
    sim.clear_master_faults("dcdbsync")
    await trio.sleep(BACKOFF)
    with pytest.raises(RemoteNotFound):
        await master.get_record("users", "no-such-user")
    assert health.is_up


async def test_a_cancelled_probe_lets_the_next_caller_probe(
    sim: SimCloud,
    http: HttpSession,
    health: MasterHealth,
    sent: Sent,
    autojump_clock: trio.testing.MockClock,
) -> None:
    master = master_client(sim, http, health)
    sim.set_master_faults("sysinv", timeout=True)
    with pytest.raises(MasterUnavailable):
        await master.list_certificates()
    await trio.sleep(BACKOFF)
    with trio.move_on_after(0.5):
        await master.list_certificates()  # the probe, cancelled while it hangs
    assert not health.state("sysinv").probing
    sim.clear_master_faults()
    assert await master.list_certificates() == []
    assert health.is_up
    assert len(sent.to("/master/sysinv/")) == 3


async def test_a_refused_token_says_nothing_of_the_service_behind_it(
    sim: SimCloud,
    http: HttpSession,
    health: MasterHealth,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.INFO, logger="dcorch.remote.master_health")
    master = master_client(sim, http, health)
    sim.set_master_faults("dcdbsync", offline=True)
    with pytest.raises(MasterUnavailable, match="master dbsync"):
        await master.get_record("users", "nobody")
    # keystone goes too, and the next call (dbsync's probe) needs a new token
    sim.set_master_faults("keystone", offline=True)
    http.forget_token(sim.endpoints.master_keystone)
    await trio.sleep(BACKOFF)
    with pytest.raises(MasterUnavailable, match="master keystone") as info:
        await master.get_record("users", "nobody")
    assert info.value.url == f"{sim.endpoints.master_keystone}/auth/tokens"
    assert not health.state("keystone").up
    assert not health.state("dbsync").up  # never asked, so not "back"
    assert lines(caplog, "master.up") == []
    assert len(lines(caplog, "master.down")) == 2
