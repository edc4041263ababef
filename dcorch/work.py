"""The contract between whoever records work (proxies, audits) and the store that commits it.

A :class:`WorkOrder` becomes, in one transaction, a ``resource`` row (found or created), an
``orch_job`` and an ``orch_request`` per eligible target (docs/behaviour.md#recording-work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A change recorded at the System Controller that every eligible subcloud must apply."""

    endpoint_type: str
    """``platform`` or ``identity`` (the stored sync endpoint)."""
    resource_type: str
    """``users``, ``certificates``, ... (see :mod:`dcorch.constants`)."""
    source_resource_id: str
    """The master's id of the object (keystone id, certificate signature, audit id, ...)."""
    operation_type: str
    """``post``, ``put``, ``patch``, ``delete``, ``create`` or ``action``."""
    resource_info: str = "{}"
    """JSON text the sync driver needs (request body, payload, ...); may hold secrets."""
    subcloud: str | None = None
    """Target one subcloud by region name; ``None`` targets every eligible subcloud."""
    job_uuid: str | None = None
    """Idempotency key, stored as ``orch_job.uuid``: recording an order whose job already
    exists returns that job instead of a second one. The dispatcher sets it before the first
    attempt, so a retry after an ambiguous commit (connection lost during COMMIT) cannot write
    the same work twice."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What one committed work order produced."""

    orch_job_id: int
    resource_id: int
    target_regions: tuple[str, ...]
    """Region names that received an ``orch_request`` (empty when none was eligible)."""


class WorkSink(Protocol):
    """Records work orders durably (the database's dispatcher; tests may record instead).

    The proxy answers only after :meth:`submit` returned: after a 2xx the work is committed.
    """

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        """Commit ``orders`` (all or none) and return one result per order, in order.

        Raises:
            Overloaded: the sink cannot take more work now; nothing was recorded.
        """
        ...


class Overloaded(Exception):
    """The work sink's queue stayed full; the caller should retry later (HTTP 503).

    Attributes:
        retry_after: seconds the client should wait (the ``Retry-After`` header value).
    """

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"work sink is full, retry after {retry_after} s")
        self.retry_after = retry_after
