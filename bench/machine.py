"""What the numbers were measured on: a ratio is only comparable on a described machine."""

from __future__ import annotations

import os
import platform
import sqlite3
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(postgres_version: str | None) -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and database versions (``postgres_version`` from the run)."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version or "not reachable",
    }
