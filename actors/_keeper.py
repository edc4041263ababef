"""The keeper task: one per child, alive from the child's start to its final stop.

It is the task a supervisor starts with ``nursery.start``, so `start_child` returns as
soon as the child is ready, and a child that fails to start raises in the caller::

    node = await nursery.start(keeper.serve, supervisor, node)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._node import Node
    from ._supervisor import Supervisor


async def serve(supervisor: Supervisor, node: Node, *, task_status: trio.TaskStatus[Node]) -> None:
    """Keep `node` running under `supervisor`'s rules; ready once its first start is done.

    Restarts happen inside this task, so a restart never makes a new nursery child and a
    child's whole life (every incarnation) is bounded by this one task.
    """
    await supervisor.keep(node, lambda: task_status.started(node))
