"""Database faults: PostgreSQL restarted mid-run, SQLite locked by another process.

The system runs in-process (``open_dcorch``) while several clients create users through the
identity proxy. In the middle of the run the database goes away for a few seconds:

* PostgreSQL: the server itself is stopped and started again (``pg_ctlcluster``). The service
  uses a private database created and dropped by the ``pg_database`` fixture, but the server is
  shared, so the outage is kept short and the server is started again in a ``finally`` (and
  checked to answer) whatever happens;
* SQLite: a separate ``python -c`` process holds ``BEGIN EXCLUSIVE`` on the database file.

The service must ride it out without a restart: commands during the outage may be refused with
a 5xx (never hang past the client's timeout), commands after it succeed again, and every
command that got a 201 (before, during or after) has its work in the database and reaches
every subcloud.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import trio

from actors import NodeSnapshot
from dcorch import constants as c
from dcorch.harness import Dcorch, open_dcorch

from .conftest import PG_ADMIN, REGIONS_3, fast_settings, pg_database, work_view  # noqa: F401

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CLIENTS = 4
OUTAGE = 3.0
PHASE_ACKS = 2 * CLIENTS
"""Commands acknowledged before the outage, and again after it, that end those phases."""
FIGURES: dict[str, dict[str, Any]] = {}


@dataclass
class Ledger:
    acknowledged: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    during_outage: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    timeouts: int = 0
    """Requests that hit the client's timeout (a hang)."""
    outage: bool = False
    over: bool = False
    """The outage has ended; requests started from now on count in ``acknowledged_after``."""
    acknowledged_after: int = 0


async def _ready(dc: Dcorch) -> None:
    await dc.wait_converged(timeout=60)
    with trio.fail_after(60):
        while True:
            rows = await dc.db.list_subclouds()
            if all(r.initial_sync_state == c.INITIAL_SYNC_COMPLETED for r in rows):
                return
            await trio.sleep(0.05)


async def _clients(dc: Dcorch, ledger: Ledger, tag: str, stop: trio.Event) -> None:
    """``CLIENTS`` clients creating users until ``stop``; every answer is tallied.

    Clients finish the request they are in rather than being cancelled: a request cancelled
    half-way would leave httpx body iterators to the garbage collector (a ResourceWarning).
    """

    async def one(n: int) -> None:
        async with httpx.AsyncClient(timeout=20) as client:
            i = 0
            while not stop.is_set():
                name = f"{tag}-{n}-{i}"
                i += 1
                body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
                started = time.monotonic()
                during = ledger.outage
                after = ledger.over
                try:
                    response = await client.post(
                        f"{dc.identity_url}/v3/users", json=body, headers=dc.auth
                    )
                    outcome = str(response.status_code)
                except httpx.TransportError as exc:
                    response = None
                    outcome = type(exc).__name__
                    if isinstance(exc, httpx.TimeoutException):
                        ledger.timeouts += 1
                ledger.slowest = max(ledger.slowest, time.monotonic() - started)
                ledger.statuses[outcome] += 1
                if during or ledger.outage:
                    ledger.during_outage[outcome] += 1
                if response is not None and response.status_code == 201:
                    ledger.acknowledged.append(response.json()["user"]["id"])
                    if after:
                        ledger.acknowledged_after += 1
                else:
                    assert response is None or response.status_code >= 500, outcome
                    await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        for n in range(CLIENTS):
            nursery.start_soon(one, n)


async def _run_with_outage(
    dc: Dcorch, ledger: Ledger, outage: Callable[[], Awaitable[None]]
) -> None:
    """Clients before, during and after ``outage()``; commands started after it must succeed.

    Each phase ends on a count of acknowledged commands, not on a timer.
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_clients, dc, ledger, "db-fault", stop)
        try:
            with trio.fail_after(30):  # commands flow before the outage
                await _until(lambda: len(ledger.acknowledged) >= PHASE_ACKS)
            ledger.outage = True
            try:
                await outage()
            finally:
                ledger.outage = False
                ledger.over = True
            with trio.fail_after(30):  # recovered without a restart: new commands acknowledged
                await _until(lambda: ledger.acknowledged_after >= PHASE_ACKS)
        finally:
            stop.set()
    assert ledger.acknowledged_after >= PHASE_ACKS


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - the caller bounds it with fail_after
        await trio.sleep(0.05)


async def _assert_nothing_lost(dc: Dcorch, ledger: Ledger) -> dict[str, int]:
    view = await trio.to_thread.run_sync(work_view, dc.settings.database_url)
    for uid in ledger.acknowledged:
        jobs = [j for j in view.jobs_for(uid) if view.jobs[j][0] == c.RESOURCE_USERS]
        assert len(jobs) == 1, (uid, jobs)
        assert sorted(r for r, _, _ in view.requests[jobs[0]]) == list(REGIONS_3), uid
    assert view.orphans == []
    assert dc.sim is not None
    with trio.fail_after(60):
        for region in REGIONS_3:
            while not set(ledger.acknowledged) <= set(dc.sim.subcloud(region).identity.users):  # noqa: ASYNC110
                await trio.sleep(0.1)
    return dict(ledger.during_outage)


def _restarts(tree: NodeSnapshot) -> dict[str, int]:
    found: dict[str, int] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.restarts:
            found[node.name] = node.restarts
        stack.extend(node.children)
    return found


# -- PostgreSQL restarted --------------------------------------------------------------------

PG_CTL = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]


def _pg_answers() -> bool:
    try:
        with closing(psycopg.connect(PG_ADMIN, connect_timeout=2)):
            return True
    except psycopg.OperationalError:
        return False


async def _ensure_pg_running() -> None:
    """Start the server if it is down and wait until it answers (other tests share it)."""
    with trio.CancelScope(shield=True), trio.move_on_after(60):
        while not await trio.to_thread.run_sync(_pg_answers):
            await trio.run_process([*PG_CTL, "start"], check=False, capture_stdout=True)
            await trio.sleep(0.5)


@pytest.mark.postgres
@pytest.mark.timeout(180)
async def test_postgres_restart_mid_run_loses_nothing(pg_database: str) -> None:  # noqa: F811
    settings = fast_settings(subclouds=3).replace(database={"url": pg_database})
    ledger = Ledger()
    health: Counter[int] = Counter()

    down: list[float] = []
    down_seen: list[bool] = []

    async def restart_postgres() -> None:
        stopped = time.monotonic()
        try:
            await trio.run_process([*PG_CTL, "stop", "-m", "fast"], capture_stdout=True)
            down_seen.append(not await trio.to_thread.run_sync(_pg_answers))
            deadline = trio.current_time() + OUTAGE
            while trio.current_time() < deadline:
                response = await dc.client.get(dc.api_url + "/health", timeout=10)
                health[response.status_code] += 1
                await trio.sleep(0.5)
        finally:
            await _ensure_pg_running()
            down.append(time.monotonic() - stopped)

    try:
        async with open_dcorch(settings, ephemeral_ports=True) as dc:
            await _ready(dc)
            await _run_with_outage(dc, ledger, restart_postgres)
            during = await _assert_nothing_lost(dc, ledger)
            restarts = _restarts(dc.system.snapshot())
            healthy = (await dc.client.get(dc.api_url + "/health")).status_code
    finally:
        await _ensure_pg_running()

    assert _pg_answers()
    assert healthy == 200
    assert down_seen == [True]  # the server really was down
    assert ledger.timeouts == 0  # no command hung past the client's timeout
    FIGURES["postgres"] = {
        "acknowledged": len(ledger.acknowledged),
        "lost": 0,
        "answers": dict(ledger.statuses),
        "during_outage": during,
        "server_down_s": round(down[0], 1),
        "health_during_outage": dict(health),
        "slowest_answer_s": round(ledger.slowest, 2),
        "restarts": restarts,
    }
    print(f"\ndatabase faults [postgres restart]: {FIGURES['postgres']}")


# -- SQLite locked by another process --------------------------------------------------------

HOLD_LOCK = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
    "conn.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "conn.execute('COMMIT')\n"
)


@pytest.mark.timeout(120)
async def test_sqlite_locked_by_another_process_loses_nothing() -> None:
    ledger = Ledger()
    held: list[float] = []

    async def lock_sqlite() -> None:
        path = dc.settings.database_url.split(":///", 1)[1]
        holder = await trio.lowlevel.open_process(
            [sys.executable, "-c", HOLD_LOCK, path, str(OUTAGE)], stdout=subprocess.PIPE
        )
        try:
            assert holder.stdout is not None
            with trio.fail_after(10):
                assert (await holder.stdout.receive_some(64)).strip() == b"locked"
            started = time.monotonic()
            assert await holder.wait() == 0
            held.append(time.monotonic() - started)
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.wait()

    async with open_dcorch(fast_settings(subclouds=3), ephemeral_ports=True) as dc:
        await _ready(dc)
        await _run_with_outage(dc, ledger, lock_sqlite)
        during = await _assert_nothing_lost(dc, ledger)
        restarts = _restarts(dc.system.snapshot())

    assert held
    assert held[0] >= OUTAGE - 0.5
    assert ledger.timeouts == 0  # no command hung past the client's timeout
    FIGURES["sqlite"] = {
        "acknowledged": len(ledger.acknowledged),
        "lost": 0,
        "answers": dict(ledger.statuses),
        "during_outage": during,
        "lock_held_s": round(held[0], 1),
        "slowest_answer_s": round(ledger.slowest, 2),
        "restarts": restarts,
    }
    print(f"\ndatabase faults [sqlite locked]: {FIGURES['sqlite']}")
