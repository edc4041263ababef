"""Scenario 2: proxied commands per second through HTTP at N subclouds and C concurrent clients.

Each command is ``POST /v3/users`` through the identity proxy: forward to the (simulated) master
keystone, then one work order fanned out to N eligible subclouds, committed before the 201. The
system runs **without its engine** (``open_dcorch(engine=False)``) so no sync work competes for
the two cores; what is measured is the write path the client waits on. Group commit shows as the
average number of commands per dispatcher transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from bench.backends import Backend
from bench.progress import Progress
from bench.scenarios.baselines import reset_work, sync_engine
from bench.scenarios.system import seeded_system, user_body
from bench.stats import median, percentile
from dcorch.harness import Dcorch


@dataclass
class ThroughputResult:
    """One (backend, N, clients) cell."""

    backend: str
    subclouds: int
    clients: int
    commands: int
    commands_per_s: float
    p50_ms: float
    p99_ms: float
    avg_batch: float
    rows_per_s: float
    errors: int
    engine: str = "off (engine=False)"


@dataclass
class _Load:
    """Shared state of the closed-loop clients of one cell."""

    total: int
    issued: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


async def _client(dc: Dcorch, load: _Load) -> None:
    """A closed-loop client: the next command as soon as the last one answered."""
    while load.issued < load.total:
        load.issued += 1
        t0 = time.perf_counter()
        r = await dc.client.post(
            dc.identity_url + "/v3/users", json=user_body("tp"), headers=dc.auth
        )
        load.latencies.append(time.perf_counter() - t0)
        load.statuses.append(r.status_code)


async def run_throughput(
    backend: Backend,
    subclouds: int,
    clients: list[int],
    commands: dict[int, int],
    *,
    progress: Progress | None = None,
) -> list[ThroughputResult]:
    """For each client count: ``commands[c]`` POSTs by ``c`` concurrent clients (closed loop)."""
    out: list[ThroughputResult] = []
    engine = sync_engine(backend.sync_url)
    try:
        async with seeded_system(backend, subclouds, engine=False) as dc:
            for conc in clients:
                total = commands[conc]
                await trio.to_thread.run_sync(reset_work, engine)
                # Warm the proxy's token cache and connections outside the measurement.
                await dc.client.post(
                    dc.identity_url + "/v3/users", json=user_body("warm"), headers=dc.auth
                )
                batches0 = dc.db.dispatcher.stats.order_batches
                subs0 = dc.db.dispatcher.stats.submissions
                load = _Load(total)
                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(conc):
                        nursery.start_soon(_client, dc, load)
                elapsed = time.perf_counter() - t0
                latencies = load.latencies
                errors = sum(1 for s in load.statuses if s != 201)
                batches = dc.db.dispatcher.stats.order_batches - batches0
                subs = dc.db.dispatcher.stats.submissions - subs0
                done = len(latencies)
                out.append(
                    ThroughputResult(
                        backend=backend.name,
                        subclouds=subclouds,
                        clients=conc,
                        commands=done,
                        commands_per_s=done / elapsed,
                        p50_ms=median(latencies) * 1e3,
                        p99_ms=percentile(latencies, 99) * 1e3,
                        avg_batch=subs / batches if batches else 0.0,
                        rows_per_s=done * subclouds / elapsed,
                        errors=errors,
                    )
                )
                if progress:
                    progress.step(f"{backend.name} N={subclouds} C={conc}")
            await trio.to_thread.run_sync(reset_work, engine)
    finally:
        engine.dispose()
    return out
