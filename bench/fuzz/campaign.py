"""The seeded campaign behind ``./just fuzz``: every surface, its report, its exit status.

``python -m bench.fuzz --inputs 10000 --seed 1 --database sqlite`` starts the system
(:func:`bench.fuzz.system.open_fuzz_system`), runs each surface's strategy through hypothesis
with a seed derived from ``--seed`` (so a run can be repeated), judges every input
(:func:`bench.fuzz.surfaces.judge`), lets the engine finish and checks that every subcloud
converged to the master (an accepted change was not lost on the way), then prints the report and
exits 1 if any count that must be zero is not. Failures are recorded and the run goes on; the
first few of each kind are printed with the input that caused them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from bench.fuzz.checks import PROBLEMS, Tally, Verdict
from bench.fuzz.inputs import Input, Weights
from bench.fuzz.surfaces import judge, strategies
from bench.fuzz.system import FuzzSystem, fuzz_settings, open_fuzz_system, postgres_database

SURFACES: Final = tuple(Weights().shares)
CONVERGE_TIMEOUT: Final = 180.0
MAX_ROUNDS: Final = 5
"""hypothesis may stop a round early (a strategy it thinks exhausted); rounds with fresh seeds
top the surface up to its share."""


class Failed(AssertionError):
    """An input failed a check (raised in strict mode, so hypothesis shrinks it)."""


def run_surface(
    system: FuzzSystem,
    name: str,
    strategy: st.SearchStrategy[Input],
    count: int,
    seed_value: int,
    tally: Tally,
    *,
    strict: bool = False,
) -> None:
    """Draw ``count`` inputs of one surface and judge each; ``strict`` raises on the first
    failure (CI: hypothesis then shrinks it to a minimal input)."""
    start = tally.surfaces[name].inputs if name in tally.surfaces else 0
    for round_number in range(MAX_ROUNDS):
        done = (tally.surfaces[name].inputs if name in tally.surfaces else 0) - start
        if done >= count:
            return

        @settings(
            max_examples=count - done,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        )
        @seed(seed_value + 7919 * round_number)
        @given(item=strategy)
        def run(item: Input) -> None:
            verdict = judge(system, item)
            if verdict is None:
                return  # httpx would not send it (the raw surface covers such bytes)
            tally.add(name, item.describe(), verdict)
            if strict and verdict.problems:
                raise Failed(_explain(item, verdict))

        run()


def _explain(item: Input, verdict: Verdict) -> str:
    problems = "; ".join(f"{kind}: {detail}" for kind, detail in verdict.problems)
    return f"{item.describe()}\n  -> {verdict.answer.describe()}\n  {problems}"


@dataclass
class Options:
    inputs: int
    seed: int
    database: str
    agent: bool
    surfaces: tuple[str, ...]
    json_path: str = ""


def campaign(options: Options) -> tuple[Tally, dict[str, Any]]:
    """Run the campaign; the tally and the run's figures (report fields)."""
    tally = Tally()
    started = time.monotonic()
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if options.database == "postgresql" else ""
        system = stack.enter_context(open_fuzz_system(fuzz_settings(options.seed, url)))
        surfaces = [s for s in options.surfaces if options.agent or s != "dbsync-agent"]
        if "dbsync-agent" in surfaces:
            system.start_agent()
        ready = time.monotonic()
        shares = Weights().split(options.inputs, surfaces)
        for name, strategy in strategies(system, surfaces).items():
            began = time.monotonic()
            surface_seed = options.seed * 1000 + SURFACES.index(name)  # the same with --surfaces
            run_surface(system, name, strategy, shares[name], surface_seed, tally)
            done = tally.surfaces.get(name)
            print(
                f"  {name:<13} {done.inputs if done else 0:>6} inputs "
                f"in {time.monotonic() - began:6.1f} s",
                file=sys.stderr,
                flush=True,
            )
        fuzzed = time.monotonic()
        differences = system.wait_converged(CONVERGE_TIMEOUT)
        figures = {
            "seed": options.seed,
            "database": options.database,
            "agent": "dbsync-agent" in surfaces,
            "start_s": round(ready - started, 1),
            "fuzz_s": round(fuzzed - ready, 1),
            "inputs_per_s": round(tally.inputs / max(fuzzed - ready, 1e-9), 1),
            "log_records_scanned": system.scan.records,
            "secrets_in_logs": system.scan.hits,
            "secret_examples": list(system.scan.examples),
            "not_converged": differences,
            "master_crashes": system.scan.master_crashes,
            "child_crashes": list(system.scan.child_crashes),
        }
    figures["wall_s"] = round(time.monotonic() - started, 1)
    return tally, figures


def failed(tally: Tally, figures: dict[str, Any]) -> bool:
    return (
        tally.failed
        or bool(figures["secrets_in_logs"])
        or bool(figures["not_converged"])
        or bool(figures["child_crashes"])
    )


def report(tally: Tally, figures: dict[str, Any]) -> str:
    """The campaign's report (plain text)."""
    lines = [
        f"dcorch fuzz campaign: seed {figures['seed']}, database {figures['database']}, "
        f"DB-sync agent {'on' if figures['agent'] else 'off'}",
        f"{tally.inputs} inputs in {figures['fuzz_s']} s ({figures['inputs_per_s']} inputs/s); "
        f"wall time {figures['wall_s']} s (start-up {figures['start_s']} s)",
        "",
        f"{'surface':<13} {'inputs':>7} {'2xx':>6} {'3xx':>5} {'4xx':>6} {'5xx':>5} {'none':>5}"
        f"  {'dcorch5xx':>9} {'sim5xx':>6} {'changed':>7} {'lost':>4} {'secret':>6} {'hang':>4}",
    ]
    for name, t in tally.surfaces.items():
        s, p = t.statuses, t.problems
        lines.append(
            f"{name:<13} {t.inputs:>7} {s['2xx']:>6} {s['3xx']:>5} {s['4xx']:>6} {s['5xx']:>5} "
            f"{s['none']:>5}  {p['dcorch_5xx']:>9} {p['sim_5xx']:>6} "
            f"{p['changed_on_rejection']:>7} {p['lost']:>4} {p['secret_logged']:>6} {p['hang']:>4}"
        )
    relayed = sum(t.relayed_5xx for t in tally.surfaces.values())
    lines += [
        "",
        f"inputs tried:                    {tally.inputs}",
        f"dcorch 5xx:                      {tally.total('dcorch_5xx')}"
        f" (relayed from the master: {relayed}; simulator 5xx: {tally.total('sim_5xx')})",
        f"database changes on rejection:   {tally.total('changed_on_rejection')}",
        f"accepted changes lost:           {tally.total('lost')}",
        f"secrets seen in logs:            {figures['secrets_in_logs']}"
        f" (of {figures['log_records_scanned']} records scanned)",
        f"hangs (no answer):               {tally.total('hang')}",
        f"supervised children crashed:     {len(figures['child_crashes'])}",
        f"subclouds converged after:       "
        f"{'yes' if not figures['not_converged'] else figures['not_converged']}",
    ]
    for kind in PROBLEMS:
        for example in tally.examples.get(kind, []):
            lines.append(f"  [{kind}] {example}")
    for example in figures["secret_examples"]:
        lines.append(f"  [secret in log] {example}")
    for example in filter(None, figures["child_crashes"]):
        lines.append(f"  [child crashed] {example}")
    lines.append("")
    lines.append("RESULT: " + ("FAIL" if failed(tally, figures) else "PASS"))
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz",
        description="Seeded bad-input campaign over the v1 API, the proxies and DB-sync.",
    )
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs in all (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="the campaign's seed (default 1)")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="dcorch's database (postgresql: a private database on 127.0.0.1:5432)",
    )
    parser.add_argument(
        "--no-agent",
        action="store_true",
        help="leave out the dcorch dbsync agent (it needs the keystone virtualenv)",
    )
    parser.add_argument(
        "--surfaces",
        default=",".join(SURFACES),
        help=f"comma-separated subset of {','.join(SURFACES)}",
    )
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    chosen = tuple(s for s in args.surfaces.split(",") if s)
    unknown = sorted(set(chosen) - set(SURFACES))
    if unknown:
        parser.error(f"unknown surfaces: {', '.join(unknown)}")
    return Options(
        inputs=args.inputs,
        seed=args.seed,
        database=args.database,
        agent=not args.no_agent,
        surfaces=chosen,
        json_path=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    tally, figures = campaign(options)
    print(report(tally, figures))
    if options.json_path:
        per_surface = {
            name: {"inputs": t.inputs, **t.statuses, **t.problems, "relayed_5xx": t.relayed_5xx}
            for name, t in tally.surfaces.items()
        }
        totals = {kind: tally.total(kind) for kind in PROBLEMS}
        with open(options.json_path, "w") as out:
            json.dump({**figures, "inputs": tally.inputs, "surfaces": per_surface, **totals}, out)
    return 1 if failed(tally, figures) else 0
