"""Sync drivers: apply ONE pending request to ONE subcloud (docs/behaviour.md#sync-drivers).

Drivers are idempotent (creating an existing object with the same id replaces it; deleting a
missing one succeeds), which makes "retry everything still pending after a crash" safe. One that
succeeds without changing anything says so with a :class:`~dcorch.sync.noop.NoOp`.
"""

from __future__ import annotations

from dcorch import constants as c
from dcorch.db.rows import PendingRequest
from dcorch.remote.errors import PermanentSyncError
from dcorch.sync.drivers import identity, platform
from dcorch.sync.drivers.context import DriverContext
from dcorch.sync.noop import NoOp

__all__ = ("DriverContext", "apply_request")


async def apply_request(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Apply ``request`` to ``ctx.subcloud``; raises a :class:`SyncError` on failure.

    Returns None, or a :class:`NoOp` when it completed without changing anything.
    """
    if request.endpoint_type == c.ENDPOINT_TYPE_PLATFORM:
        await platform.apply(ctx, request)
        return None
    if request.endpoint_type.startswith(c.ENDPOINT_TYPE_IDENTITY):
        return await identity.apply(ctx, request)
    raise PermanentSyncError(f"no sync driver for endpoint type {request.endpoint_type!r}")
