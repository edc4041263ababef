"""The System Controller's health as the engine sees it: one tracker per service.

Every engine call to a master service (keystone, DB-sync, sysinv, dcmanager) runs inside
:meth:`MasterHealth.attempt`. A transport failure, a timeout, a 5xx, 408 or 429, or a refused
authentication marks that dependency **down** and is raised as
:class:`~dcorch.remote.errors.MasterUnavailable` naming the dependency and the URL, never as
:class:`~dcorch.remote.errors.SubcloudUnreachable`: the subcloud is not at fault
(docs/behaviour.md#master-outage).

While a dependency is down, calls that need it fail at once without going out, except one probe
per backoff step (``request_retry_backoff`` doubling up to ``request_retry_backoff_max``), so
thousands of pairs waiting for the master cost one call per step, not one each. Every call needs
keystone too (its token), so a keystone outage blocks them all; its probe fetches a fresh token,
so that keystone is really asked. The first success marks the dependency up again and tells the
listeners (the sync manager wakes the pairs that were waiting).

Each change of state is logged once: ``master.down`` (WARNING, with the URL and the reason) and
``master.up`` (INFO). :meth:`status` feeds ``/health``; :meth:`up_series` and
:meth:`failure_series` feed ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import trio

from dcorch.remote.endpoints import MasterEndpoints
from dcorch.remote.errors import (
    MasterUnavailable,
    SubcloudUnreachable,
    SyncError,
    TransientSyncError,
)

logger = logging.getLogger(__name__)

KEYSTONE: Final = "keystone"
DBSYNC: Final = "dbsync"
SYSINV: Final = "sysinv"
DCMANAGER: Final = "dcmanager"
DEPENDENCIES: Final = (KEYSTONE, DBSYNC, SYSINV, DCMANAGER)

WallClock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DependencyState:
    """What is known about one master service."""

    name: str
    root: str
    """Its versioned root URL (what its calls start with)."""
    up: bool = True
    url: str = ""
    """The last URL that failed."""
    reason: str = ""
    since: datetime | None = None
    """Wall-clock time of the last change of state (None: never changed)."""
    down_at: float = 0.0
    """trio time it went down."""
    steps: int = 0
    """Failed probes in a row, the first failure included (drives the backoff)."""
    next_probe_at: float = 0.0
    probing: bool = False
    failures: int = 0
    """Failed calls since start (the ``dcorch_master_failures_total`` counter)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One admitted call: the dependencies it probes (down ones it was let through for)."""

    dependencies: tuple[str, ...]
    probes: tuple[str, ...]

    @property
    def probes_keystone(self) -> bool:
        """The call must fetch a fresh token: a cached one would not ask keystone."""
        return KEYSTONE in self.probes


class MasterHealth:
    """Health of the master's services (see the module docstring).

    Args:
        endpoints: the master's service roots (URL prefixes tell the dependencies apart).
        backoff: delay before the first probe after a failure.
        backoff_max: cap of the doubling delay between probes.
        wall_clock: for the ``since`` shown in ``/health``.
    """

    def __init__(
        self,
        endpoints: MasterEndpoints,
        *,
        backoff: float,
        backoff_max: float,
        wall_clock: WallClock = _utc_now,
    ) -> None:
        roots = {
            KEYSTONE: endpoints.keystone,
            DBSYNC: endpoints.dcdbsync,
            SYSINV: endpoints.sysinv,
            DCMANAGER: endpoints.dcmanager,
        }
        # A service the master does not have (no sysinv or dcmanager URL) is not a dependency.
        self._states = {
            name: DependencyState(name, url.rstrip("/")) for name, url in roots.items() if url
        }
        self._by_length = sorted(self._states.values(), key=lambda s: len(s.root), reverse=True)
        self._backoff = max(0.0, backoff)
        self._backoff_max = max(self._backoff, backoff_max)
        self._clock = wall_clock
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        down = [s.name for s in self._states.values() if not s.up]
        return f"<MasterHealth down {down}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """Every master dependency is up."""
        return all(s.up for s in self._states.values())

    def state(self, dependency: str) -> DependencyState:
        """One dependency's state (introspection and tests)."""
        return self._states[dependency]

    def dependency_of(self, url: str) -> str | None:
        """Which master service ``url`` belongs to (longest root first); None: not the master."""
        for state in self._by_length:
            if url == state.root or url.startswith(state.root + "/"):
                return state.name
        return None

    def on_recovered(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(dependency)`` each time a dependency comes back up."""
        self._listeners.append(listener)

    def status(self) -> dict[str, Any]:
        """``/health``'s view: ``{"status": "up"|"degraded", "dependencies": {...}}``."""
        now = trio.current_time()
        deps: dict[str, Any] = {}
        for s in self._states.values():
            view: dict[str, Any] = {"status": "up" if s.up else "down", "url": s.root}
            if not s.up:
                view.update(
                    failed_url=s.url,
                    reason=s.reason,
                    since=s.since.isoformat() if s.since else None,
                    next_probe_in=round(max(0.0, s.next_probe_at - now), 3),
                )
            deps[s.name] = view
        return {"status": "up" if self.is_up else "degraded", "dependencies": deps}

    def up_series(self) -> Iterable[tuple[dict[str, str], float]]:
        """``dcorch_master_up{dependency=...}``: 1 up, 0 down."""
        return [({"dependency": s.name}, 1.0 if s.up else 0.0) for s in self._states.values()]

    def failure_series(self) -> Iterable[tuple[dict[str, str], float]]:
        """``dcorch_master_failures_total{dependency=...}``: failed calls since start."""
        return [({"dependency": s.name}, float(s.failures)) for s in self._states.values()]

    # -- calls -------------------------------------------------------------------------------

    @contextmanager
    def attempt(self, url: str) -> Iterator[Attempt]:
        """Admit one call to ``url`` (and keystone, for its token), then record its outcome.

        Raises:
            MasterUnavailable: a dependency it needs is down and not due for a probe (nothing
                was sent), or the call failed as an outage (the original error is the cause).
        """
        target = self.dependency_of(url)
        needed = tuple(dict.fromkeys(d for d in (target, KEYSTONE) if d is not None))
        now = trio.current_time()
        for name in needed:
            s = self._states[name]
            if not s.up and (s.probing or now < s.next_probe_at):
                retry_at = s.next_probe_at if not s.probing else now + self._delay(s.steps + 1)
                raise MasterUnavailable(name, s.url, s.reason, retry_at=retry_at)
        probes = tuple(name for name in needed if not self._states[name].up)
        for name in probes:
            self._states[name].probing = True
        try:
            yield Attempt(needed, probes)
        except SyncError as exc:
            failed_url = exc.url or url
            reason = _outage_reason(exc, failed_url)
            culprit = self.dependency_of(failed_url) or target
            if reason is None or culprit is None:
                self._succeeded(needed)  # it answered: a 404 or a bad record is not an outage
                raise
            if culprit != KEYSTONE:
                self._succeeded((KEYSTONE,))  # the token came through (the target failed)
            # (if the token failed, the target was never asked: its state stays as it was)
            retry_at = self._failed(culprit, failed_url, reason, probe=culprit in probes)
            raise MasterUnavailable(culprit, failed_url, reason, retry_at=retry_at) from exc
        else:
            self._succeeded(needed)
        finally:
            for name in probes:
                self._states[name].probing = False

    def _delay(self, steps: int) -> float:
        delay: float = min(self._backoff * 2.0 ** max(0, steps - 1), self._backoff_max)
        return delay

    def _failed(self, name: str, url: str, reason: str, *, probe: bool) -> float:
        s = self._states[name]
        now = trio.current_time()
        s.failures += 1
        s.url, s.reason = url, reason
        if s.up:
            s.up, s.steps, s.down_at, s.since = False, 1, now, self._clock()
            s.next_probe_at = now + self._delay(1)
            logger.warning(
                "master.down dependency=%s url=%s reason=%s retry_in=%.1f",
                name,
                url,
                reason,
                s.next_probe_at - now,
            )
        elif probe:
            s.steps += 1
            s.next_probe_at = now + self._delay(s.steps)
        # else: a call admitted while it was up, failing after it went down: same outage.
        return s.next_probe_at

    def _succeeded(self, names: tuple[str, ...]) -> None:
        for name in names:
            s = self._states[name]
            if s.up:
                continue
            now = trio.current_time()
            logger.info(
                "master.up dependency=%s url=%s down_for=%.1f probes=%d",
                name,
                s.root,
                now - s.down_at,
                s.steps,
            )
            s.up, s.steps, s.since, s.next_probe_at = True, 0, self._clock(), 0.0
            for listener in self._listeners:
                listener(name)


def _outage_reason(exc: SyncError, url: str) -> str | None:
    """Why ``exc`` means the service is unavailable (None: it answered, e.g. 404 or 409).

    Unavailable: a transport failure or timeout, or an HTTP status that :mod:`.http` calls
    transient (5xx, 408, 429, authentication refused); an odd answer shape is not an outage.
    """
    outage = isinstance(exc, SubcloudUnreachable) or (
        isinstance(exc, TransientSyncError) and exc.status is not None
    )
    if not outage:
        return None
    text = str(exc)
    _, sep, tail = text.partition(f"{url}: ")
    return tail if sep else text
