"""The bench's scenario functions run end to end at the tiniest size and report measured ratios.

They are exercised through their real interfaces on SQLite (PostgreSQL and scale are the bench's
job, not CI's), so a refactor of the system that breaks the bench fails here, not at release.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bench import report
from bench.backends import fresh_backend
from bench.machine import describe
from bench.scenarios.enqueue import METHODS, run_enqueue
from bench.scenarios.footprint import run_footprint
from bench.scenarios.propagation import CONDITIONS, run_propagation
from bench.scenarios.throughput import run_throughput
from bench.stats import percentile, ratio


def test_enqueue_ratios_come_from_the_measured_medians() -> None:
    with fresh_backend("sqlite") as backend:
        cells = trio.run(lambda: run_enqueue(backend, [10], 1, old_cap_rows=5, old_cap_seconds=1.0))
    assert {c.method for c in cells} == set(METHODS)
    floor = next(c for c in cells if c.method == "floor")
    for cell in cells:
        assert cell.subclouds == 10
        assert len(cell.times_s) == 1
        assert cell.median_s > 0
        assert cell.ratio_to_floor == cell.median_s / floor.median_s
    old = next(c for c in cells if c.method == "old")
    assert old.extrapolated
    assert old.rows_written == 5
    assert floor.ratio_to_floor == 1.0


def test_throughput_propagation_and_report(tmp_path: Path) -> None:
    with fresh_backend("sqlite") as backend:
        tp = trio.run(lambda: run_throughput(backend, 10, [1, 2], {1: 2, 2: 4}))
    assert [(r.clients, r.commands, r.errors) for r in tp] == [(1, 2, 0), (2, 4, 0)]
    assert all(r.commands_per_s > 0 and r.p99_ms >= r.p50_ms > 0 for r in tp)
    assert tp[0].avg_batch == 1.0
    with fresh_backend("sqlite") as backend:
        pr = trio.run(lambda: run_propagation(backend, 3, 1, budget=30.0))
    assert [r.condition for r in pr] == list(CONDITIONS)
    assert all(r.median_s > 0 for r in pr)
    assert [r.reached for r in pr] == [3, 3, 2]  # one of three offline in the last condition
    results = {
        "mode": "smoke",
        "started": "now",
        "machine": describe(None),
        "config": {"runs": 1},
        "throughput": tp,
        "propagation": pr,
        "errors": [],
        "skipped": ["PostgreSQL: not in the smoke test"],
    }
    text = report.write(results, tmp_path)
    for heading in ("## 2.", "## 3.", "skipped"):
        assert heading in text
    assert json.loads((tmp_path / "results.json").read_text())["throughput"][0]["clients"] == 1
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_footprint_runs_in_fresh_processes() -> None:
    cell = run_footprint("sqlite", 3, timeout=60)
    assert cell.subclouds == 3
    assert cell.startup_s > 0
    assert cell.rss_mib > 0
    assert cell.kib_per_actor == pytest.approx((cell.rss_mib - cell.rss_no_engine_mib) * 1024 / 3)


def test_stats_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert ratio(3.0, 2.0) == 1.5
