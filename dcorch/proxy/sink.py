"""The contract between the proxy and whatever records work orders (the dispatcher).

The proxy answers the client only after :meth:`WorkSink.submit` has returned, so a 2xx from the
proxy means the work is committed and cannot be lost: a crash after the reply finds the work in
the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dcorch.work import EnqueueResult, WorkOrder


class WorkSink(Protocol):
    """Records work orders durably."""

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        """Commit ``orders`` (all or none) and return one result per order, in order.

        Returns only once the work is committed.

        Raises:
            dcorch.proxy.errors.Overloaded: the sink's mailbox is full; nothing was recorded.
        """
        ...
