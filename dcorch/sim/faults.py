"""Fault injection per subcloud, or per master service: latency, random errors, hangs, offline
and flapping (a master outage is the master's DB-sync, keystone, sysinv or dcmanager down).

All subclouds share one port, so "offline" cannot be a refused connection: the simulator sends a
response head promising a body, then closes the connection. An httpx client gets
``httpx.RemoteProtocolError`` (a ``TransportError``), never a status, as a caller's "subcloud
unreachable" path must handle. ``timeout`` hangs until the client gives up or the server stops.

Flapping is a function of ``trio.current_time()`` since the faults were set (deterministic under
``MockClock``); random errors use a per-subcloud seeded ``random.Random`` (reproducible).
"""

from __future__ import annotations

import enum
import random
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import trio

HANG_SECONDS: Final = 24 * 3600.0
"""How long a ``timeout`` fault holds a request when the client never gives up."""


class FaultAction(enum.Enum):
    """What the router does with one request."""

    PASS = "pass"
    OFFLINE = "offline"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults of one subcloud; all off by default."""

    latency_ms: float = 0.0
    """Added before every answer (including errors)."""
    error_rate: float = 0.0
    """Probability (0..1) that a request gets ``error_status`` instead of an answer."""
    error_status: int = 503
    timeout: bool = False
    """Hang every request until the client disconnects."""
    offline: bool = False
    """Close every connection without an answer (see module docstring)."""
    flap_offline_s: float = 0.0
    """With ``flap_online_s``: offline for this long, then online, periodically."""
    flap_online_s: float = 0.0
    seed: int | None = None
    """Seed of the error-rate generator; None derives one from the region name."""

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Validate a control-API body; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field {unknown[0]}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in {"timeout", "offline"}:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean, got {value!r}")
            elif name in {"error_status", "seed"}:
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError(f"{name} must be an integer, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
            values[name] = value
        faults = cls(**values)
        if faults.error_rate > 1:
            raise ValueError(f"error_rate must be <= 1, got {faults.error_rate!r}")
        if not 400 <= faults.error_status <= 599:
            raise ValueError(f"error_status must be 400..599, got {faults.error_status!r}")
        return faults

    def as_json(self) -> dict[str, Any]:
        """Plain-data view for the control API."""
        return asdict(self)

    @property
    def is_clear(self) -> bool:
        """True when no fault is set."""
        return self == Faults(seed=self.seed)


class FaultState:
    """Faults plus what deciding them needs: when they were set and the seeded generator."""

    __slots__ = ("faults", "rng", "since")

    def __init__(self, faults: Faults, region: str, now: float) -> None:
        self.faults = faults
        self.since = now
        seed = faults.seed if faults.seed is not None else zlib.crc32(region.encode())
        self.rng = random.Random(seed)

    def is_offline(self, now: float) -> bool:
        """Offline right now (always, or in the offline part of the flapping period)."""
        f = self.faults
        if f.offline:
            return True
        period = f.flap_offline_s + f.flap_online_s
        if f.flap_offline_s <= 0 or period <= 0:
            return False
        return (now - self.since) % period < f.flap_offline_s

    def decide(self, now: float) -> FaultAction:
        """The fate of one request arriving at ``now`` (trio time)."""
        if self.is_offline(now):
            return FaultAction.OFFLINE
        if self.faults.timeout:
            return FaultAction.TIMEOUT
        if self.faults.error_rate > 0 and self.rng.random() < self.faults.error_rate:
            return FaultAction.ERROR
        return FaultAction.PASS


def current_time() -> float:
    """trio's clock (virtual under MockClock), the time base of every fault."""
    return trio.current_time()
