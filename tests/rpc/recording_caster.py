"""An in-memory :class:`~dcorch.rpc.contract.Caster`: records casts, fails or stalls on demand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from dcorch.rpc.contract import CastUndeliverable, Context


@dataclass(frozen=True, slots=True)
class Cast:
    at: float
    """Trio time of the attempt."""
    topic: str
    method: str
    kwargs: dict[str, Any]
    ctxt: Context | None

    @property
    def report(self) -> tuple[str, str, str, bool]:
        """``(region, endpoint_type, sync_status, alarmable)`` of a status cast."""
        k = self.kwargs
        return (k["subcloud_region"], k["endpoint_type"], k["sync_status"], k["alarmable"])


class RecordingCaster:
    """``down``: every cast is refused; ``fail_next``: that many are; ``gate``: casts wait on it."""

    def __init__(self) -> None:
        self.attempts: list[Cast] = []
        self.casts: list[Cast] = []
        """The casts the "broker" took, in order."""
        self.down = False
        self.fail_next = 0
        self.crash_next: BaseException | None = None
        self.gate: trio.Event | None = None
        self._changed = trio.Event()

    async def cast(
        self,
        topic: str,
        method: str,
        kwargs: Mapping[str, Any],
        *,
        ctxt: Context | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()
        attempt = Cast(trio.current_time(), topic, method, dict(kwargs), ctxt)
        self.attempts.append(attempt)
        self._step()
        if self.gate is not None:
            await self.gate.wait()
        if self.crash_next is not None:
            crash, self.crash_next = self.crash_next, None
            raise crash
        if self.down or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            raise CastUndeliverable("no connection to the broker")
        self.casts.append(attempt)
        self._step()

    def reports(self) -> list[tuple[str, str, str, bool]]:
        return [c.report for c in self.casts]

    def _step(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, *, attempts: int = 0, casts: int = 0) -> None:
        """Wait (without sleeping: the virtual clock only moves for the outbox) for counts."""
        while len(self.attempts) < attempts or len(self.casts) < casts:
            await self._changed.wait()
