"""Child specifications: what a supervisor starts, and how it treats a child that ends.

A spec is a frozen value, so one spec can start the same child again after a crash::

    specs = (
        ActorSpec(name="db", factory=DbActor, mailbox_size=64),
        TaskSpec(name="http", fn=serve_http, args=(app,)),
        SupervisorSpec(name="sync", strategy=Strategy.ONE_FOR_ONE),
    )
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ._actor import Actor

M = TypeVar("M")
R = TypeVar("R")


class Restart(enum.StrEnum):
    """When a supervisor restarts a child that ended (OTP restart types)."""

    PERMANENT = "permanent"
    """Always: the child is meant to run as long as its supervisor."""
    TRANSIENT = "transient"
    """Only after a crash: a normal exit (or a stop) is final."""
    TEMPORARY = "temporary"
    """Never: the child is removed once it ends, whatever the reason."""


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them crashes (OTP strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the crashed child: siblings are independent."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: siblings are stopped (last started first) then all start again in order."""
    REST_FOR_ONE = "rest_for_one"
    """The crashed child and those started after it, which are assumed to depend on it."""


@dataclass(frozen=True, slots=True)
class RestartIntensity:
    """How many restarts a supervisor accepts before it gives up and escalates.

    Over `max_restarts` restarts in `period` s (`trio.current_time()`): `RestartIntensityExceeded`.
    """

    max_restarts: int = 3
    """Restarts allowed within one period; 0 escalates on the first crash."""
    period: float = 5.0
    """Length of the sliding window, in seconds."""

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not self.period > 0:
            raise ValueError(f"period must be > 0, got {self.period}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restarting a child: ``min(cap, base * 2**n * (1 + jitter * u))``.

    ``n`` counts the child's earlier restarts inside the intensity period, so a child quiet for a
    period starts again from `base`. ``u`` is drawn in [0, 1) from the actor system's random
    source (give `open_actor_system` a seeded `random.Random` for reproducible delays). Jitter
    spreads the restarts of many children that failed together (e.g. a shared peer went down).
    """

    base: float = 0.1
    """Delay before the first restart, in seconds (0 restarts at once)."""
    cap: float = 30.0
    """Upper bound of any delay, in seconds."""
    jitter: float = 0.1
    """Relative random extra delay, 0 for exact delays."""

    def __post_init__(self) -> None:
        if not 0 <= self.base <= self.cap:
            raise ValueError(f"base must be >= 0 and <= cap, got {self.base}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before restart number `attempt` (0 for the first), in seconds."""
        raw = self.base * 2.0 ** min(attempt, 64)
        if self.jitter:
            raw *= 1.0 + self.jitter * rng.random()
        return min(self.cap, raw)


def _check_name(name: str) -> None:
    if not name or "/" in name:
        raise ValueError(f"name must be non-empty and must not contain '/', got {name!r}")


def _check_timeout(what: str, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{what} must be >= 0 or None, got {value}")


@dataclass(frozen=True, slots=True)
class ActorSpec(Generic[M, R]):
    """Start an `Actor` made by `factory` with a bounded mailbox.

    The mailbox is the child's, not an instance's: a restart's new instance reads what is queued.
    """

    name: str
    """Name among its siblings; the registry path is the parent's path plus this name."""
    factory: Callable[[], Actor[M, R]]
    """Builds a fresh actor for every (re)start; use functools.partial to bind arguments."""
    mailbox_size: int = 16
    """Messages the mailbox holds before `tell` waits and `tell_nowait` raises."""
    ask_timeout: float | None = 30.0
    """Default time an `ask` waits for its reply; None waits as long as the caller does."""
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float | None = 5.0
    """Time a graceful stop may take before the actor is cancelled; None: no own limit."""
    drain_on_stop: bool = False
    """Handle the queued messages on a graceful stop instead of failing them."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        # an int, never math.inf: an unbounded mailbox hides overload until memory runs out
        if isinstance(self.mailbox_size, bool) or not isinstance(self.mailbox_size, int):
            raise TypeError(f"mailbox_size must be an int, got {self.mailbox_size!r}")
        if self.mailbox_size < 0:
            raise ValueError(f"mailbox_size must be >= 0, got {self.mailbox_size}")
        _check_timeout("ask_timeout", self.ask_timeout)
        _check_timeout("shutdown_timeout", self.shutdown_timeout)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Run ``await fn(*args, task_status=...)`` as a supervised child.

    E.g. an HTTP server. As with `trio.Nursery.start`, `fn` calls ``task_status.started(value)``
    when ready (kept on `TaskRef.value`); a graceful stop cancels it: cleanup goes in ``finally``.
    """

    name: str
    fn: Callable[..., Awaitable[object]]
    args: tuple[Any, ...] = ()
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float | None = 5.0

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_timeout("shutdown_timeout", self.shutdown_timeout)


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """Start a nested supervisor with its own children, strategy and intensity.

    A restart starts from these `children`; ones added by `SupervisorRef.start_child` are gone.
    """

    name: str
    children: tuple[ChildSpec, ...] = ()
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: RestartIntensity = RestartIntensity()
    backoff: Backoff = Backoff()
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float | None = None
    """None because a supervisor already bounds the stop of each of its children."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_timeout("shutdown_timeout", self.shutdown_timeout)


ChildSpec: TypeAlias = ActorSpec[Any, Any] | TaskSpec | SupervisorSpec
"""Anything a supervisor can start."""


def timeout_or_inf(value: float | None) -> float:
    """Trio spells "no limit" as math.inf; the specs spell it None."""
    return math.inf if value is None else value
