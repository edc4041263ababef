"""Plain-data views of the running tree: states, kinds, statistics and snapshots.

Everything here is a frozen value that `dataclasses.asdict` turns into dicts and lists::

    tree = dataclasses.asdict(system.snapshot())
    print(json.dumps(tree, indent=2))
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    """Where a child is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    """Ended (crash, or a sibling's restart) and waiting for its backoff or its turn."""
    STOPPING = "stopping"
    STOPPED = "stopped"
    """Ended for good after a stop or a normal exit."""
    FAILED = "failed"
    """Ended for good after a crash that was not restarted."""


class Kind(enum.StrEnum):
    """What a node of the tree runs."""

    ACTOR = "actor"
    SUPERVISOR = "supervisor"
    TASK = "task"


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A point-in-time view of one actor, as returned by `ActorRef.statistics`."""

    path: str
    state: str
    mailbox_depth: int
    """Messages queued in the mailbox."""
    mailbox_capacity: int
    senders_waiting: int
    """Tasks blocked in `tell`/`ask` because the mailbox is full."""
    restarts: int
    last_error: str | None
    """repr of the last exception that ended an incarnation, if any."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node of the supervision tree, as returned by `ActorSystem.snapshot`."""

    name: str
    path: str
    kind: str
    state: str
    restarts: int
    last_error: str | None
    mailbox_depth: int | None = None
    """None for supervisors and tasks, which have no mailbox."""
    mailbox_capacity: int | None = None
    children: tuple[NodeSnapshot, ...] = ()
