"""A tiny Prometheus text-format registry: counters, gauges and histograms.

Hand-written instead of a dependency: a handful of series, rendered only when ``/metrics`` is
scraped; updates are plain arithmetic on the trio thread, so there is no locking.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Histogram:
    """Cumulative-bucket histogram of observed values (seconds)."""

    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1
        self.samples.append(value)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, bucket_count in zip(self.buckets, self.counts, strict=False):
            running += bucket_count
            yield f'{self.name}_bucket{{le="{bound}"}} {running}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {self.total}"
        yield f"{self.name}_count {self.count}"


@dataclass
class Counter:
    name: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(key)} {value}"


GaugeSource = Callable[[], Iterable[tuple[dict[str, str], float]]]


@dataclass
class Gauge:
    """A series read from a callback at scrape time (mailbox depths, requests by state).

    ``kind`` ``counter``: a count kept by its owner (the master's failures), rendered as one.
    """

    name: str
    help: str
    source: GaugeSource
    kind: str = "gauge"

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.source():
            yield f"{self.name}{_labels(tuple(sorted(labels.items())))} {value}"


@dataclass
class Metrics:
    """The process's metric series; one instance belongs to one running system."""

    enqueue_latency: Histogram = field(
        default_factory=lambda: Histogram(
            "dcorch_enqueue_latency_seconds",
            "time from a proxied command's arrival at the dispatcher to its commit",
        )
    )
    proxied_commands: Counter = field(
        default_factory=lambda: Counter(
            "dcorch_proxied_commands_total", "proxied commands by endpoint type and outcome"
        )
    )
    gauges: list[Gauge] = field(default_factory=list)

    def add_gauge(self, name: str, help_text: str, source: GaugeSource) -> None:
        self.gauges.append(Gauge(name, help_text, source))

    def add_counter(self, name: str, help_text: str, source: GaugeSource) -> None:
        """A counter whose values its owner keeps (read at scrape time)."""
        self.gauges.append(Gauge(name, help_text, source, kind="counter"))

    def render(self, extra: Iterable[Gauge] = ()) -> str:
        lines: list[str] = []
        lines.extend(self.enqueue_latency.render())
        lines.extend(self.proxied_commands.render())
        for gauge in [*self.gauges, *extra]:
            lines.extend(gauge.render())
        return "\n".join(lines) + "\n"
