"""The periodic rotation of the master's fernet keys, pushed to every subcloud as work.

Keystone signs tokens with the primary key of its repository; the System Controller's keys are
rotated every ``engine.fernet_rotation_interval`` (168 h, the first one a period after start)
and the new repository goes to every eligible subcloud, so tokens issued by the master keep
validating there (docs/behaviour.md#fernet-rotation). One rotation:

1. the :class:`FernetRotator` rotates the master's repository: on a System Controller a
   command (:class:`CommandRotator`, upstream runs ``keystone-fernet-keys-rotate-active``), in
   the harness the simulated master's equivalent;
2. the master's keys are read back from its sysinv (``GET /v1/fernet_repo``);
3. one ``fernet_repo`` ``put`` work order (source id ``keys``) is committed through the same
   sink the proxies use, which targets every eligible subcloud and marks their platform pairs
   ``requested`` (upstream dd30c8c2: without that wake-up rotated keys never synced).

A failed step is logged and the rest of that rotation skipped; the next period tries again, and
keys rotated but not pushed are found by each pair's platform audit, which compares them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio

from dcorch import constants as c
from dcorch.db.errors import DatabaseError
from dcorch.remote.errors import SyncError
from dcorch.sync.audit_rules import fernet_info
from dcorch.sync.pair_sync import FERNET_SOURCE_ID
from dcorch.work import EnqueueResult, Overloaded, WorkOrder, WorkSink

logger = logging.getLogger(__name__)

STDERR_TAIL: Final = 400
"""Characters of a failed command's stderr kept in the log line."""

KeyFetch = Callable[[], Awaitable[list[dict[str, Any]]]]
"""Reads the master's key repository (``[{"id": int, "key": str}]``); raises ``SyncError``."""


class RotationFailed(Exception):
    """The rotation of the master's keys did not happen (or may not have completed)."""


class FernetRotator(Protocol):
    """Rotates the System Controller's fernet key repository once."""

    async def rotate(self) -> None:
        """Rotate now; return once the new repository is in place.

        Raises:
            RotationFailed: it did not (or may not) have happened; the message says why.
        """
        ...


@dataclass(frozen=True, slots=True)
class CommandRotator:
    """Runs the rotation command (``engine.fernet_rotation_command``) as a child process.

    Run with :func:`trio.run_process`, so the event loop keeps serving while it runs; past
    ``timeout`` seconds it is terminated (then killed) and the rotation counts as failed.
    """

    argv: tuple[str, ...]
    timeout: float

    async def rotate(self) -> None:
        if not self.argv:
            raise RotationFailed("no rotation command configured")
        name = self.argv[0]
        try:
            with trio.fail_after(self.timeout):
                done = await trio.run_process(
                    list(self.argv),
                    stdin=b"",
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except trio.TooSlowError:
            raise RotationFailed(f"{name} did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise RotationFailed(f"{name} could not be started: {exc}") from None
        if done.returncode != 0:
            status = (
                f"was killed by signal {-done.returncode}"
                if done.returncode < 0
                else f"exited with status {done.returncode}"
            )
            raise RotationFailed(f"{name} {status}: stderr={_tail(done.stderr)!r}")


def _tail(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace").strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


@dataclass(slots=True)
class RotationStats:
    """What the rotation did so far (tests, introspection)."""

    rotations: int = 0
    """Rotations whose keys were committed as work."""
    failures: int = 0
    """Rotations that stopped at a failed step."""
    last: EnqueueResult | None = None
    """The work order of the latest completed rotation."""


class FernetRotation:
    """Rotates the master's keys every ``interval`` seconds and queues them for the subclouds.

    Args:
        rotator: rotates the master's repository.
        keys: reads the master's repository afterwards (the master's sysinv, uncached).
        sink: commits the work order (the database's dispatcher, as for the proxies).
        interval: seconds between rotations; the first is one interval after :meth:`run` starts.
    """

    def __init__(
        self, rotator: FernetRotator, keys: KeyFetch, sink: WorkSink, *, interval: float
    ) -> None:
        if interval <= 0:
            raise ValueError("the rotation interval must be positive")
        self._rotator = rotator
        self._keys = keys
        self._sink = sink
        self._interval = interval
        self.stats = RotationStats()

    def __repr__(self) -> str:
        return f"<FernetRotation every {self._interval:g} s {self.stats}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rotate at start + k * interval (k = 1, 2, ...) until cancelled (a supervised child).

        Fixed-rate, as upstream's periodic task: a slow rotation does not shift later ones, and
        a period it overran entirely is skipped rather than run late.
        """
        due = trio.current_time() + self._interval
        task_status.started()
        while True:
            await trio.sleep_until(due)
            await self.rotate_once()
            now = trio.current_time()
            due += self._interval
            while due <= now:
                due += self._interval

    async def rotate_once(self) -> EnqueueResult | None:
        """One rotation: rotate, read the keys back, commit their ``put``; None if a step failed.

        Each failure is logged with its step; nothing is queued then.
        """
        try:
            await self._rotator.rotate()
        except RotationFailed as exc:
            self._failed("command", str(exc), "keys unchanged, nothing queued")
            return None
        try:
            keys = _checked(await self._keys())
        except (SyncError, ValueError) as exc:
            self._failed("keys", str(exc), "rotated but not queued; the audits push them")
            return None
        order = WorkOrder(
            endpoint_type=c.ENDPOINT_TYPE_PLATFORM,
            resource_type=c.RESOURCE_FERNET_REPO,
            source_resource_id=FERNET_SOURCE_ID,
            operation_type=c.OPERATION_PUT,
            resource_info=json.dumps(fernet_info(keys)),
        )
        try:
            [result] = await self._sink.submit([order])
        except (Overloaded, DatabaseError) as exc:
            self._failed("enqueue", str(exc), "rotated but not queued; the audits push them")
            return None
        self.stats.rotations += 1
        self.stats.last = result
        logger.info(
            "fernet_rotation.done key_ids=%s job=%d subclouds=%d",
            sorted(int(k["id"]) for k in keys),
            result.orch_job_id,
            len(result.target_regions),
        )
        return result

    def _failed(self, step: str, error: str, effect: str) -> None:
        self.stats.failures += 1
        logger.warning("fernet_rotation.failed step=%s error=%s (%s)", step, error, effect)


def _checked(keys: Sequence[Any]) -> list[dict[str, Any]]:
    """The repository as read, if it is one: a non-empty list of ``{"id": int, "key": str}``."""
    if not keys:
        raise ValueError("the master's fernet repository is empty")
    for entry in keys:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError("the master's fernet repository has an entry without a key")
        try:
            int(entry["id"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the master's fernet repository has an entry without an id") from None
    return [dict(entry) for entry in keys]
