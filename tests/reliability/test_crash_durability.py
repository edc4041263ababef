"""Crash durability: ``kill -9`` the real service at random moments; no acknowledged work is lost.

The simulated clouds live inside the service process, so every restart brings a *new* master
keystone and fresh subclouds; only the dcorch database survives. The checks are therefore about
the database, which is what the promise "a 2xx from the proxy means the work is committed" is
about:

1. After every kill, read the database directly (``sqlite3`` / ``psycopg``, never through the
   service): every ``POST /v3/users`` that got a 201 has its ``orch_job`` (resource ``users``,
   operation ``post``, the user id the master returned) and one ``orch_request`` per subcloud
   that was eligible when it was acknowledged. Commands only start once the three subclouds
   have finished their initial sync and nothing changes their state afterwards, so "eligible"
   is exactly the three regions. Nothing is half-written: every job has all of its requests (no
   job with a partial set) and no ``resource`` row exists that neither a job nor a subcloud
   mapping refers to (what a rolled-back transaction that leaked would leave).
2. After the last kill, the service is restarted and left alone: every request left ``queued``
   or ``in-progress`` by the crashes must be taken up by the new process and end in a final
   state. Because the master that knew those users died with the old process, "processed" here
   means ``completed`` (applied before the kill) or ``failed`` (the new engine looked the user
   up at the new master and found it gone); a request stuck ``queued``/``in-progress`` would
   mean the restarted engine never picked acknowledged work up from the database.
3. Finally a burst of commands acknowledged by the restarted service must reach every subcloud
   of the new simulator (visible in the sim's inspection API), which shows the restarted
   process applies work end to end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio

from .conftest import (
    REGIONS_3,
    Service,
    migrated,
    pg_database,  # noqa: F401 - fixture
    service_env,
    start_service,
    work_view,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CLIENTS = 4
FIGURES: dict[str, dict[str, int]] = {}


@dataclass
class Ledger:
    acknowledged: dict[str, str] = field(default_factory=dict)
    """user id -> name, for every 201 the clients received."""
    unacknowledged: int = 0
    kills: int = 0
    left_in_flight: int = 0


async def _wait_initial_sync(service: Service) -> None:
    url = f"{service.api_url}/v1.0/admin/subclouds"
    with trio.fail_after(60):
        while True:
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.get(url, headers={"X-Auth-Token": service.token})
            except httpx.TransportError:
                await trio.sleep(0.1)
                continue
            if response.status_code == 200:
                states = {
                    s["region_name"]: s["initial_sync_state"] for s in response.json()["subclouds"]
                }
                if all(states.get(r) == "completed" for r in REGIONS_3):
                    return
            await trio.sleep(0.05)


async def _clients(
    service: Service, ledger: Ledger, tag: str, stop_after: int | None, stop: trio.Event
) -> None:
    """``CLIENTS`` concurrent clients creating users until ``stop`` (or ``stop_after`` each).

    A client finishes the request it is in (after a kill it fails fast) instead of being
    cancelled half-way, which would leave httpx's body iterator to the garbage collector (an
    unraisable ResourceWarning that fails the test).
    """

    async def one(client_no: int) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            i = 0
            while (stop_after is None or i < stop_after) and not stop.is_set():
                name = f"{tag}-c{client_no}-{i}"
                i += 1
                body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
                try:
                    response = await client.post(
                        f"{service.identity_url}/v3/users",
                        json=body,
                        headers={"X-Auth-Token": service.token},
                    )
                except httpx.TransportError:
                    ledger.unacknowledged += 1
                    await trio.sleep(0.05)
                    continue
                if response.status_code == 201:
                    ledger.acknowledged[response.json()["user"]["id"]] = name
                else:
                    ledger.unacknowledged += 1

    async with trio.open_nursery() as nursery:
        for n in range(CLIENTS):
            nursery.start_soon(one, n)


def _check_durable(url: str, ledger: Ledger) -> None:
    view = work_view(url)
    lost = []
    for uid in ledger.acknowledged:
        jobs = [j for j in view.jobs_for(uid) if view.jobs[j][0] == "users"]
        if len(jobs) != 1:
            lost.append(uid)
            continue
        regions = sorted(region for region, _, _ in view.requests.get(jobs[0], []))
        assert regions == list(REGIONS_3), (uid, regions)
    assert lost == [], f"{len(lost)} acknowledged commands lost: {lost[:5]}"
    for job, (rtype, master_id, op) in view.jobs.items():
        regions = [region for region, _, _ in view.requests.get(job, [])]
        # A broadcast job has one request per eligible subcloud; an audit repair names one.
        assert len(regions) == len(set(regions)), (job, regions)
        assert len(regions) in (1, len(REGIONS_3)), (job, rtype, master_id, op, regions)
    assert view.orphans == [], view.orphans


async def _run(url: str, tmp_path: Path, kills: int, seed: int) -> Ledger:
    rng = random.Random(seed)
    env = service_env(tmp_path / "data", url)
    log = tmp_path / "service.log"
    ledger = Ledger()
    for cycle in range(kills):
        service = await start_service(env, log)
        try:
            await _wait_initial_sync(service)
            stop = trio.Event()
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_clients, service, ledger, f"k{cycle}", None, stop)
                    await trio.sleep(rng.uniform(0.2, 1.5))
                    await service.kill()  # while the clients have requests in flight
                    stop.set()  # each finishes (fails) the request in hand, then stops
        finally:
            if service.process.returncode is None:
                await service.kill()
        ledger.kills += 1
        await trio.to_thread.run_sync(_check_durable, url, ledger)
    live = (await trio.to_thread.run_sync(work_view, url)).live_states()
    ledger.left_in_flight = live.get("queued", 0) + live.get("in-progress", 0)

    service = await start_service(env, log)
    try:
        await _wait_initial_sync(service)
        with trio.fail_after(90):
            while True:
                live = (await trio.to_thread.run_sync(work_view, url)).live_states()
                if not live.get("queued") and not live.get("in-progress"):
                    break
                await trio.sleep(0.2)
        before = set(ledger.acknowledged)
        await _clients(service, ledger, "final", 5, trio.Event())
        fresh = set(ledger.acknowledged) - before
        assert len(fresh) == 5 * CLIENTS
        async with httpx.AsyncClient(timeout=10) as client:
            for region in REGIONS_3:
                while True:  # the test's timeout bounds this wait
                    state = await client.get(f"{service.sim_url}/sim/subclouds/{region}/state")
                    have = {u["user"]["id"] for u in state.json()["users"]}
                    if fresh <= have:
                        break
                    await trio.sleep(0.1)
    finally:
        await service.stop()
    await trio.to_thread.run_sync(_check_durable, url, ledger)
    return ledger


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("backend", "kills"), [("sqlite", 12), pytest.param("postgres", 10, marks=pytest.mark.postgres)]
)
async def test_kill_9_loses_no_acknowledged_command(
    backend: str, kills: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dcorch.db'}"
        (tmp_path / "data").mkdir()
    else:
        url = request.getfixturevalue("pg_database")
    await trio.to_thread.run_sync(migrated, url)
    ledger = await _run(url, tmp_path, kills, seed=8 if backend == "sqlite" else 9)
    FIGURES[backend] = {
        "acknowledged": len(ledger.acknowledged),
        "lost": 0,
        "kills_survived": ledger.kills,
        "unacknowledged": ledger.unacknowledged,
        "in_flight_at_kills": ledger.left_in_flight,
    }
    print(f"\ncrash durability [{backend}]: {FIGURES[backend]}")
    assert ledger.kills == kills
    assert len(ledger.acknowledged) > kills * CLIENTS
