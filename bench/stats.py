"""Medians, percentiles and ratios: the only forms in which the bench reports times."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """Median of measured values (the VM's noise is about +-30 %, so never a single run)."""
    if not values:
        raise ValueError("no measurements")
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` (0..100) percentile by nearest rank; fine for latency lists of 10+ values."""
    if not values:
        raise ValueError("no measurements")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def ratio(value: float, floor: float) -> float:
    """``value / floor``, the bench's verdict form (``inf`` if the floor measured as 0)."""
    return value / floor if floor > 0 else float("inf")
