"""Scenario 3: time from a proxied change until every simulated subcloud has applied it.

The system runs with its engine on N seeded, already-synced subclouds; the clock starts only
once every sync actor is up and the simulator reports convergence. The change is one
``POST /v3/users`` through the identity proxy; arrival is read from the simulator's in-process
state (the user id present in each subcloud's keystone), polled every 10 ms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import trio

from bench.backends import Backend
from bench.progress import Progress
from bench.scenarios.system import seeded_system, user_body
from bench.stats import median
from dcorch.harness import Dcorch

CONDITIONS = ("0ms", "50ms", "1%offline")


@dataclass
class PropagationResult:
    """One (backend, N, condition) cell: seconds per run until all (online) subclouds had it."""

    backend: str
    subclouds: int
    condition: str
    times_s: list[float]
    median_s: float
    commit_ms: float
    """Median time until the proxy's 201 (the work is committed)."""
    reached: int
    """Subclouds that must receive the change (all but the offline ones)."""


async def _wait_started(dc: Dcorch, n: int, budget: float) -> None:
    manager = dc.sync_manager
    assert manager is not None, "propagation needs the engine"
    with trio.fail_after(budget):
        while len(manager.regions()) < n:  # noqa: ASYNC110 - polls foreign state
            await trio.sleep(0.05)
    await dc.wait_converged(timeout=budget)


async def _propagate_once(dc: Dcorch, targets: list[str], budget: float) -> tuple[float, float]:
    assert dc.sim is not None
    t0 = time.perf_counter()
    r = await dc.client.post(dc.identity_url + "/v3/users", json=user_body("prop"), headers=dc.auth)
    committed = time.perf_counter() - t0
    if r.status_code != 201:
        raise RuntimeError(f"user create through the proxy: {r.status_code} {r.text[:200]}")
    uid = r.json()["user"]["id"]
    remaining = set(targets)
    with trio.fail_after(budget):
        while remaining:
            remaining = {x for x in remaining if uid not in dc.sim.subcloud(x).identity.users}
            if remaining:
                await trio.sleep(0.01)
    return time.perf_counter() - t0, committed


async def run_propagation(
    backend: Backend,
    subclouds: int,
    runs: int,
    *,
    budget: float = 600.0,
    progress: Progress | None = None,
) -> list[PropagationResult]:
    """Each condition ``runs`` times on one running system; medians per condition.

    ``budget`` bounds start-up and each propagation (seconds): a change that never arrives
    fails the cell instead of hanging the run.
    """
    out: list[PropagationResult] = []
    async with seeded_system(backend, subclouds, engine=True) as dc:
        assert dc.sim is not None
        await _wait_started(dc, subclouds, budget)
        regions = list(dc.sim.regions)
        offline = regions[::100][: max(1, math.ceil(subclouds / 100))]
        for condition in CONDITIONS:
            for region in regions:
                dc.sim.clear_faults(region)
            targets = regions
            if condition == "50ms":
                for region in regions:
                    dc.sim.set_faults(region, latency_ms=50.0)
            elif condition == "1%offline":
                for region in offline:
                    dc.sim.set_faults(region, offline=True)
                targets = [r for r in regions if r not in set(offline)]
            times, commits = [], []
            for _ in range(runs):
                total, committed = await _propagate_once(dc, targets, budget)
                times.append(total)
                commits.append(committed)
                if progress:
                    progress.step(f"{backend.name} N={subclouds} {condition}")
            out.append(
                PropagationResult(
                    backend=backend.name,
                    subclouds=subclouds,
                    condition=condition,
                    times_s=times,
                    median_s=median(times),
                    commit_ms=median(commits) * 1e3,
                    reached=len(targets),
                )
            )
        for region in regions:
            dc.sim.clear_faults(region)
    return out
