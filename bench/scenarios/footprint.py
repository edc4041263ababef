"""Scenario 4: resident memory and start-up time of the whole system at N subclouds.

Each measurement runs in a fresh child process (``python -m bench.scenarios.footprint``) so the
RSS of one start-up cannot hide in the heap left by another. Per N two children start the system
on the same kind of seeded database: one without the engine (simulator, database, proxies, API)
and one with it; the RSS difference divided by N is the cost of one idle subcloud sync actor
with its handle. Start-up is timed from ``open_dcorch`` until every sync actor is started, and
separately until the simulator reports convergence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil
import trio

from bench.backends import Backend, fresh_backend


@dataclass
class FootprintResult:
    """One (backend, N) cell."""

    backend: str
    subclouds: int
    startup_s: float
    """open_dcorch until every sync actor is started."""
    converged_s: float
    """open_dcorch until the simulator reports every subcloud equal to the master."""
    rss_mib: float
    """RSS with the engine, all actors idle."""
    rss_no_engine_mib: float
    kib_per_actor: float


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def _child(backend: Backend, n: int, engine: bool) -> dict[str, Any]:
    from bench.scenarios.system import bench_settings, seed_regions
    from dcorch.harness import open_dcorch

    if not engine:
        await seed_regions(backend, [f"subcloud{i}" for i in range(1, n + 1)])
    settings = bench_settings(backend, n if engine else 0)
    t0 = time.perf_counter()
    # With the engine, the harness registers the simulated subclouds as synced (presynced).
    async with open_dcorch(settings, ephemeral_ports=True, engine=engine, presynced=engine) as dc:
        manager = dc.sync_manager
        while manager is not None and len(manager.regions()) < n:  # noqa: ASYNC110
            await trio.sleep(0.02)
        started = time.perf_counter() - t0
        converged = started
        if engine:
            await dc.wait_converged(timeout=1800)
            converged = time.perf_counter() - t0
        await trio.sleep(0.5)  # let start-up garbage settle
        return {"startup_s": started, "converged_s": converged, "rss": _rss()}


def _spawn(backend: Backend, n: int, engine: bool, timeout: float) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.scenarios.footprint", json.dumps(asdict(backend))]
    args += [str(n), "1" if engine else "0"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"footprint child failed: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_footprint(backend_name: str, subclouds: int, timeout: float = 1800.0) -> FootprintResult:
    """Two fresh children (without and with the engine), each on its own fresh database."""
    with fresh_backend(backend_name) as backend:
        base = _spawn(backend, subclouds, False, timeout)
    with fresh_backend(backend_name) as backend:
        full = _spawn(backend, subclouds, True, timeout)
    return FootprintResult(
        backend=backend_name,
        subclouds=subclouds,
        startup_s=full["startup_s"],
        converged_s=full["converged_s"],
        rss_mib=full["rss"] / 2**20,
        rss_no_engine_mib=base["rss"] / 2**20,
        kib_per_actor=(full["rss"] - base["rss"]) / subclouds / 1024,
    )


def main() -> None:
    """Child entry point: ``<backend json> <N> <engine 0|1>``; prints one JSON line."""
    backend = Backend(**json.loads(sys.argv[1]))
    result = trio.run(_child, backend, int(sys.argv[2]), sys.argv[3] == "1")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
