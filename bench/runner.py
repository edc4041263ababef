"""``dcorch bench [--quick]``: run the four scale scenarios on SQLite and PostgreSQL.

Every scenario runs on each reachable backend in a fresh database; a scenario that fails is
recorded (and makes the exit status 1) without stopping the others, so one broken part never
hides the numbers of the rest. Results go to ``bench/results/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench import report
from bench.backends import BACKENDS, fresh_backend, postgres_version
from bench.machine import describe
from bench.progress import Progress
from bench.scenarios.enqueue import profile_enqueue, run_enqueue
from bench.scenarios.footprint import run_footprint
from bench.scenarios.propagation import CONDITIONS, run_propagation
from bench.scenarios.throughput import run_throughput
from dcorch.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("enqueue", "throughput", "propagation", "footprint")


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run (``quick`` keeps the whole run under a minute)."""

    enqueue_sizes: list[int]
    runs: int
    old_cap_rows: int
    old_cap_seconds: float
    throughput_subclouds: int
    throughput_commands: dict[int, int]
    propagation_sizes: list[int]
    propagation_runs: int
    footprint_sizes: list[int]
    profile_at: int | None
    propagation_timeout: float = 600.0


QUICK = Plan(
    enqueue_sizes=[100, 1000],
    runs=3,
    old_cap_rows=100,
    old_cap_seconds=1.0,
    throughput_subclouds=100,
    throughput_commands={1: 10, 10: 30, 100: 100},
    propagation_sizes=[50],
    propagation_runs=1,
    footprint_sizes=[100],
    profile_at=None,
    propagation_timeout=20.0,
)
FULL = Plan(
    enqueue_sizes=[100, 1000, 5000, 10000],
    runs=5,
    old_cap_rows=1000,
    old_cap_seconds=10.0,
    throughput_subclouds=1000,
    throughput_commands={1: 50, 10: 200, 100: 400},
    propagation_sizes=[100, 1000, 5000],
    propagation_runs=3,
    footprint_sizes=[1000, 10000],
    profile_at=5000,
)


def _parse(quick: bool, extra: list[str]) -> tuple[Plan, list[str], list[str], str | None]:
    parser = argparse.ArgumentParser(prog="dcorch bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sizes", help="override the enqueue sizes, e.g. 5000,10000")
    parser.add_argument("--runs", type=int, help="override repetitions per enqueue cell")
    parser.add_argument("--propagation-sizes", help="override, e.g. 100,1000")
    parser.add_argument("--footprint-sizes", help="override, e.g. 1000")
    parser.add_argument("--out", help="results folder (default bench/results/<timestamp>)")
    args = parser.parse_args(
        [a for a in extra if a != "--"][: len(extra)] if extra[:1] == ["--"] else extra
    )
    plan = QUICK if quick else FULL
    changes: dict[str, Any] = {}
    if args.sizes:
        changes["enqueue_sizes"] = [int(s) for s in args.sizes.split(",")]
    if args.runs:
        changes["runs"] = args.runs
    if args.propagation_sizes:
        changes["propagation_sizes"] = [int(s) for s in args.propagation_sizes.split(",")]
    if args.footprint_sizes:
        changes["footprint_sizes"] = [int(s) for s in args.footprint_sizes.split(",")]
    if changes:
        plan = Plan(**{**plan.__dict__, **changes})
    return plan, args.only.split(","), args.backends.split(","), args.out


def _guard(results: dict[str, Any], what: str, fn: Callable[[], Any], bar: Progress) -> Any:
    """Run one scenario cell; a failure is recorded with its cause, never fatal to the run."""
    try:
        return fn()
    except Exception as exc:  # recorded and reported; the exit status says it failed
        line = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        results["errors"].append(line)
        bar.note(f"ERROR {line}")
        logging.getLogger(__name__).debug("%s", traceback.format_exc())
        return None


def run(plan: Plan, scenarios: list[str], backends: list[str], out: Path) -> dict[str, Any]:
    """Run the plan; returns the results document (also written under ``out``)."""
    pg_version, pg_reason = postgres_version()
    active = [b for b in backends if b != "postgresql" or pg_version]
    results: dict[str, Any] = {
        "mode": "quick" if plan is QUICK or plan.runs == QUICK.runs else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe(pg_version),
        "config": plan.__dict__,
        "skipped": [pg_reason] if "postgresql" in backends and not pg_version else [],
        "errors": [],
        "profiles": [],
    }
    for name in SCENARIOS:
        results[name] = []
    if "enqueue" in scenarios:
        bar = Progress("enqueue", len(active) * len(plan.enqueue_sizes) * plan.runs * 4)
        for b in active:
            with fresh_backend(b) as backend:
                cells = _guard(
                    results,
                    f"enqueue {b}",
                    lambda: trio.run(
                        lambda: run_enqueue(
                            backend,
                            plan.enqueue_sizes,
                            plan.runs,
                            old_cap_rows=plan.old_cap_rows,
                            old_cap_seconds=plan.old_cap_seconds,
                            progress=bar,
                        )
                    ),
                    bar,
                )
                results["enqueue"] += cells or []
            if plan.profile_at:
                with fresh_backend(b) as backend:
                    text = _guard(
                        results,
                        f"profile {b}",
                        partial(trio.run, partial(profile_enqueue, backend, plan.profile_at)),
                        bar,
                    )
                    if text:
                        results["profiles"].append(text)
        bar.close()
    if "throughput" in scenarios:
        clients = sorted(plan.throughput_commands)
        bar = Progress("throughput", len(active) * len(clients))
        for b in active:
            with fresh_backend(b) as backend:
                cells = _guard(
                    results,
                    f"throughput {b}",
                    lambda: trio.run(
                        lambda: run_throughput(
                            backend,
                            plan.throughput_subclouds,
                            clients,
                            plan.throughput_commands,
                            progress=bar,
                        )
                    ),
                    bar,
                )
                results["throughput"] += cells or []
        bar.close()
    if "propagation" in scenarios:
        total = len(active) * len(plan.propagation_sizes) * len(CONDITIONS) * plan.propagation_runs
        bar = Progress("propagation", total)
        for b in active:
            for n in plan.propagation_sizes:
                with fresh_backend(b) as backend:
                    cells = _guard(
                        results,
                        f"propagation {b} N={n}",
                        partial(
                            trio.run,
                            partial(
                                run_propagation, backend, n, plan.propagation_runs, progress=bar
                            ),
                        ),
                        bar,
                    )
                    results["propagation"] += cells or []
        bar.close()
    if "footprint" in scenarios:
        bar = Progress("footprint", len(active) * len(plan.footprint_sizes))
        for b in active:
            for n in plan.footprint_sizes:
                cell = _guard(results, f"footprint {b} N={n}", partial(run_footprint, b, n), bar)
                if cell:
                    results["footprint"].append(cell)
                bar.step(f"{b} N={n}")
        bar.close()
    results["text"] = report.write(results, out)
    return results


def main(settings: Settings, quick: bool, extra: list[str]) -> int:
    """CLI entry (``dcorch bench``): prints the tables; 0 unless a scenario failed."""
    del settings  # every scenario builds its own settings on its own throwaway database
    logging.getLogger().setLevel(logging.WARNING)
    for noisy in ("hypercorn.error", "hypercorn.access", "httpx", "dcorch", "actors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan, scenarios, backends, out_arg = _parse(quick, extra)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out_arg) if out_arg else RESULTS / stamp
    t0 = time.perf_counter()
    results = run(plan, scenarios, backends, out)
    print(results["text"])
    print(f"results in {out} ({time.perf_counter() - t0:.1f} s)")
    return 1 if results["errors"] else 0
