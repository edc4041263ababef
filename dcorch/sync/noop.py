"""Requests that end ``completed`` although nothing changed, and why.

Drivers stay idempotent: a patch of an object dcorch never mapped on the subcloud, or a create the
master has since deleted, must not fail the pair. But a bare ``completed`` would claim a change
that never happened, so the driver returns a :class:`NoOp` naming the reason; the sync pass logs
it, stores it with the request and counts it (docs/behaviour.md#no-op-completions).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


class NoOpReason(enum.StrEnum):
    """Why a completed request changed nothing (stored, logged and a metric label)."""

    NO_MAPPING = "no_mapping"
    """A patch or delete of an object dcorch has no mapping for on that subcloud (and, for a
    delete, nothing with the master's id there either)."""
    SUPERSEDED = "superseded"
    """A create (or full replacement) of an object the master no longer has, with a later
    delete of it for that subcloud queued or done: the end state is the master's."""
    NOTHING_TO_PATCH = "nothing_to_patch"
    """A patch carrying no field keystone accepts for the kind."""


@dataclass(frozen=True, slots=True)
class NoOp:
    """What a driver returns when it completed a request without changing anything."""

    reason: NoOpReason


@dataclass(slots=True)
class NoOpCounts:
    """No-op completions per (endpoint type, resource type, operation, reason), since start.

    Owned by the sync manager (one per running engine), read by ``/metrics`` at scrape time.
    """

    counts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def add(self, endpoint_type: str, resource_type: str, operation: str, reason: str) -> None:
        key = (endpoint_type, resource_type, operation, reason)
        self.counts[key] = self.counts.get(key, 0) + 1

    def series(self) -> Iterator[tuple[dict[str, str], float]]:
        """Prometheus samples (labels, value), in a stable order."""
        for (ept, rtype, op, reason), count in sorted(self.counts.items()):
            labels = {
                "endpoint_type": ept,
                "resource_type": rtype,
                "operation": op,
                "reason": reason,
            }
            yield labels, float(count)
