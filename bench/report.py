"""Results as JSON, a markdown table and PNG plots under ``bench/results/<timestamp>/``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def as_plain(obj: Any) -> Any:
    """Dataclasses (nested in lists/dicts) to JSON-able data."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: as_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_plain(v) for v in obj]
    return obj


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report: machine, the four scenario tables, skips, errors and profiles."""
    out = [f"# dcorch-trio bench ({results['mode']}, {results['started']})", ""]
    out += [*_table(["machine", ""], list(results["machine"].items())), ""]
    enq = results.get("enqueue", [])
    if enq:
        out += [
            "## 1. Enqueue of one command to N eligible subclouds (median ms, ratio to floor)",
            "",
        ]
        out += [
            "floor = raw driver, orch_request rows only; ours = `db.enqueue_work` (resource, job,"
            " requests, sync_request fan-out); base = sync ORM `bulk_insert_mappings`;"
            " old = ORM object + commit per subcloud (`*` = capped and extrapolated)."
            f" Runs per cell: {results['config']['runs']}.",
            "",
        ]
        cells = {(r["backend"], r["subclouds"], r["method"]): r for r in enq}
        keys = sorted({(r["backend"], r["subclouds"]) for r in enq})
        rows = []
        for backend, n in keys:
            row: list[Any] = [backend, n]
            for m in ("floor", "ours", "base", "old"):
                c = cells.get((backend, n, m))
                star = "*" if c and c["extrapolated"] else ""
                row.append(
                    f"{c['median_s'] * 1e3:.1f}{star} ({c['ratio_to_floor']:.2f}x)" if c else "-"
                )
            ours, base = cells.get((backend, n, "ours")), cells.get((backend, n, "base"))
            row.append(f"{base['median_s'] / ours['median_s']:.1f}x" if ours and base else "-")
            rows.append(row)
        out += _table(["backend", "N", "floor", "ours", "base (b)", "old (a)", "base/ours"], rows)
        out += [""]
    tp = results.get("throughput", [])
    if tp:
        out += ["## 2. Proxied commands through HTTP (POST /v3/users, engine off)", ""]
        out += [
            *_table(
                [
                    "backend",
                    "N",
                    "clients",
                    "commands",
                    "cmd/s",
                    "p50 ms",
                    "p99 ms",
                    "avg batch",
                    "rows/s",
                ],
                [
                    [
                        r["backend"],
                        r["subclouds"],
                        r["clients"],
                        r["commands"],
                        f"{r['commands_per_s']:.1f}",
                        f"{r['p50_ms']:.1f}",
                        f"{r['p99_ms']:.1f}",
                        f"{r['avg_batch']:.1f}",
                        f"{r['rows_per_s']:.0f}",
                    ]
                    for r in tp
                ],
            ),
            "",
        ]
    pr = results.get("propagation", [])
    if pr:
        out += ["## 3. Propagation: proxied change until all (online) subclouds have it", ""]
        out += [
            *_table(
                ["backend", "N", "condition", "runs", "median s", "commit ms", "subclouds reached"],
                [
                    [
                        r["backend"],
                        r["subclouds"],
                        r["condition"],
                        len(r["times_s"]),
                        f"{r['median_s']:.2f}",
                        f"{r['commit_ms']:.1f}",
                        r["reached"],
                    ]
                    for r in pr
                ],
            ),
            "",
        ]
    fp = results.get("footprint", [])
    if fp:
        out += ["## 4. Footprint (fresh process per measurement, seeded synced subclouds)", ""]
        out += [
            *_table(
                [
                    "backend",
                    "N",
                    "start-up s",
                    "until converged s",
                    "RSS MiB",
                    "RSS no engine MiB",
                    "KiB/actor",
                ],
                [
                    [
                        r["backend"],
                        r["subclouds"],
                        f"{r['startup_s']:.1f}",
                        f"{r['converged_s']:.1f}",
                        f"{r['rss_mib']:.0f}",
                        f"{r['rss_no_engine_mib']:.0f}",
                        f"{r['kib_per_actor']:.1f}",
                    ]
                    for r in fp
                ],
            ),
            "",
        ]
    for note in results.get("skipped", []):
        out.append(f"- skipped: {note}")
    for note in results.get("errors", []):
        out.append(f"- ERROR: {note}")
    for text in results.get("profiles", []):
        out += ["", "## Profile of `ours`", "", "```", text, "```"]
    return "\n".join(out) + "\n"


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Enqueue time vs N per method (log-log) and throughput vs clients; returns the files."""
    files: list[Path] = []
    enq = results.get("enqueue", [])
    for backend in sorted({r["backend"] for r in enq}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in ("floor", "ours", "base", "old"):
            pts = sorted(
                (r["subclouds"], r["median_s"] * 1e3)
                for r in enq
                if r["backend"] == backend and r["method"] == m
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="eligible subclouds",
            ylabel="median ms",
            title=f"enqueue ({backend})",
        )
        ax.legend()
        path = folder / f"enqueue_{backend}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    tp = results.get("throughput", [])
    if tp:
        fig, ax = plt.subplots(figsize=(6, 4))
        for backend in sorted({r["backend"] for r in tp}):
            pts = sorted((r["clients"], r["commands_per_s"]) for r in tp if r["backend"] == backend)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=backend)
        ax.set(
            xscale="log", xlabel="concurrent clients", ylabel="commands/s", title="proxied commands"
        )
        ax.legend()
        path = folder / "throughput.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    return files


def write(results: dict[str, Any], folder: Path) -> str:
    """Write results.json, results.md and the plots; returns the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = as_plain(results)
    (folder / "results.json").write_text(json.dumps(plain, indent=2, default=str))
    text = markdown(plain)
    (folder / "results.md").write_text(text)
    plots(plain, folder)
    return text
