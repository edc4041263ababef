"""The unit of work the proxy, the audit and the fernet rotation hand to the dispatcher.

One :class:`WorkOrder` becomes, in one transaction, a ``resource`` row (found or created), one
``orch_job`` row and one ``orch_request`` row per eligible target subcloud (spec section 3).
"""

from __future__ import annotations

from dataclasses import dataclass


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
