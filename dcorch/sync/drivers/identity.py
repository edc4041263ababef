"""Identity driver: replicate keystone objects with their master ids.

Creates and full replacements go through the subcloud's dcdbsync as DB records, so ids and
password hashes are the master's; partial updates and deletes through its keystone API. Role
assignments and revocation events have their own handlers (docs/behaviour.md#identity-driver).
A handler that completes without changing anything returns a :class:`NoOp` saying why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from dcorch import constants as c
from dcorch.db.rows import PendingRequest
from dcorch.remote.clients import DBSYNC_KINDS, Record, loads_info, singular
from dcorch.remote.errors import PermanentSyncError, RemoteConflict, RemoteNotFound
from dcorch.sync.drivers.context import DriverContext
from dcorch.sync.noop import NoOp, NoOpReason

logger = logging.getLogger(__name__)

PATCHABLE: Final = {
    "users": (
        "name",
        "domain_id",
        "default_project_id",
        "password",
        "email",
        "description",
        "enabled",
        "options",
        "extra",
    ),
    "groups": ("name", "domain_id", "description"),
    "projects": (
        "name",
        "domain_id",
        "description",
        "enabled",
        "parent_id",
        "is_domain",
        "options",
        "tags",
    ),
    "roles": ("name", "domain_id", "description", "options"),
}
"""Fields a ``patch`` request may carry to the subcloud's keystone, per kind."""
CENTRAL_PASSWORD: Final = "central_password"
"""resource_info ``{"central_password": true}`` of a users ``patch``: set the central admin
password the driver was given (:attr:`DriverContext.keyring_password`). The audit queues it for
the keyring (docs/behaviour.md#audit), and the database never holds the password."""


Handler = Callable[[DriverContext, PendingRequest], Awaitable[NoOp | None]]

NO_MAPPING: Final = NoOp(NoOpReason.NO_MAPPING)
SUPERSEDED: Final = NoOp(NoOpReason.SUPERSEDED)
NOTHING_TO_PATCH: Final = NoOp(NoOpReason.NOTHING_TO_PATCH)


async def apply(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Dispatch on resource type and operation (``create`` is treated as ``post``)."""
    rtype = request.resource_type
    op = (
        c.OPERATION_POST if request.operation_type == c.OPERATION_CREATE else request.operation_type
    )
    handler: Handler | None
    if rtype in DBSYNC_KINDS:
        handler = {
            c.OPERATION_POST: create_object,
            c.OPERATION_PUT: replace_object,
            c.OPERATION_PATCH: patch_object,
            c.OPERATION_DELETE: delete_object,
        }.get(op)
    elif rtype == c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS:
        handler = {
            c.OPERATION_POST: grant_assignment,
            c.OPERATION_PUT: _no_op,
            c.OPERATION_DELETE: revoke_assignment,
        }.get(op)
    elif rtype in (c.RESOURCE_REVOKE_EVENTS, c.RESOURCE_REVOKE_EVENTS_FOR_USER):
        handler = {
            c.OPERATION_POST: create_revoke_event,
            c.OPERATION_DELETE: delete_revoke_event,
        }.get(op)
    else:
        handler = None
    if handler is None:
        raise PermanentSyncError(f"no identity handler for {request.operation_type} {rtype}")
    return await handler(ctx, request)


async def _no_op(ctx: DriverContext, request: PendingRequest) -> None:
    """A role assignment ``put`` changes nothing (upstream does the same)."""


def record_id(kind: str, record: Record) -> str:
    """The keystone id inside a dcdbsync record."""
    body = record.get(singular(kind))
    if isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    raise PermanentSyncError(f"{kind} record without an id")


async def _master_record(
    ctx: DriverContext, request: PendingRequest, kind: str, master_id: str
) -> Record | None:
    """The master's record to copy; None when a later delete makes copying it pointless.

    A master without the object fails the request, unless a delete of it for this subcloud was
    recorded after this request and is queued or done: then the subcloud ends as the master
    whatever this request does (a quick create -> delete, or both queued during an outage).
    The 404 is fresh: it was fetched while applying this request, and failed master reads are
    never cached (``MasterReads``), so a stale answer cannot retire a create the master has.
    """
    if not master_id:
        raise PermanentSyncError(f"{kind} request without a source id")
    try:
        return await ctx.master.get_record(kind, master_id)
    except RemoteNotFound:
        pass
    if await ctx.db.later_delete_exists(ctx.region, request.resource_id, request.id):
        return None
    raise PermanentSyncError(f"master has no {singular(kind)} {master_id}")


async def create_object(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Insert the master's record on the subcloud; an existing same-id object is replaced."""
    kind = request.resource_type
    master_id = request.source_resource_id or request.master_id
    record = await _master_record(ctx, request, kind, master_id)
    if record is None:
        return SUPERSEDED
    try:
        created = await ctx.remote.create_record(kind, record)
    except RemoteConflict:
        # Already there (a retried create, or a crash after the POST): converge by replacing.
        created = await ctx.remote.replace_record(kind, master_id, record)
    await ctx.map(kind, master_id, record_id(kind, created))
    return None


def _subcloud_id_from_info(kind: str, info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    body = info.get(singular(kind))
    if isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    return str(info["id"]) if info.get("id") else None


async def replace_object(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Overwrite the subcloud object named in resource_info with the master's record."""
    kind = request.resource_type
    subcloud_id = _subcloud_id_from_info(kind, loads_info(request.resource_info))
    if subcloud_id is None:
        raise PermanentSyncError(f"{kind} put without the subcloud's id in resource_info")
    master_id = request.source_resource_id or request.master_id
    record = await _master_record(ctx, request, kind, master_id)
    if record is None:
        return SUPERSEDED
    try:
        replaced = await ctx.remote.replace_record(kind, subcloud_id, record)
    except RemoteNotFound:
        # The named object is gone: deleted meanwhile, or this put is a replay and the object
        # already carries the master's id. Create it, or converge the master-id object.
        try:
            replaced = await ctx.remote.create_record(kind, record)
        except RemoteConflict:
            replaced = await ctx.remote.replace_record(kind, master_id, record)
    await ctx.map(kind, master_id, record_id(kind, replaced))
    return None


async def patch_object(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Apply a partial update through the subcloud's keystone (only fields present).

    No mapping: the object was never replicated by dcorch (made on the master directly, or its
    create failed); there is nothing to patch, and the audit brings it over whole.
    """
    kind = request.resource_type
    info = loads_info(request.resource_info)
    if not info:
        raise PermanentSyncError(f"{kind} patch with empty resource_info")
    mapping = await ctx.db.get_subcloud_resource(ctx.region, kind, request.master_id)
    if mapping is None:
        return NO_MAPPING
    if isinstance(info, dict) and info.get(CENTRAL_PASSWORD) is True and kind == "users":
        if ctx.keyring_password is None:
            raise PermanentSyncError("users patch of the central password, which is unknown")
        body: Any = {"password": ctx.keyring_password}
    else:
        body = info.get(singular(kind), info) if isinstance(info, dict) else {}
    fields = {k: v for k, v in body.items() if k in PATCHABLE[kind]}
    if not fields:
        return NOTHING_TO_PATCH
    updated = await ctx.remote.keystone_update(kind, mapping.subcloud_resource_id, fields)
    if updated.get("id") not in (None, mapping.subcloud_resource_id):
        logger.error("identity.patch_id_mismatch region=%s kind=%s", ctx.region, kind)
    return None


async def delete_object(ctx: DriverContext, request: PendingRequest) -> NoOp | None:
    """Delete through keystone; a missing object is already the goal.

    Without a mapping: the master id, which replicas carry (adopted, or mapping lost to a crash);
    if nothing has that id either, nothing changed anywhere (:data:`NO_MAPPING`).
    """
    kind = request.resource_type
    mapping = await ctx.db.get_subcloud_resource(ctx.region, kind, request.master_id)
    target = mapping.subcloud_resource_id if mapping is not None else request.master_id
    deleted = False
    if target:
        with contextlib.suppress(RemoteNotFound):
            await ctx.remote.keystone_delete(kind, target)
            deleted = True
    if mapping is not None:
        await ctx.unmap(kind, request.master_id)
        return None
    return None if deleted else NO_MAPPING


def split_assignment(master_id: str) -> tuple[str, str, str]:
    """``"{project}_{actor}_{role}"`` -> its three ids (keystone ids have no ``_``)."""
    parts = master_id.split("_")
    if len(parts) != 3 or not all(parts):
        raise PermanentSyncError(f"malformed role assignment id {master_id!r}")
    return parts[0], parts[1], parts[2]


async def _exists(ctx: DriverContext, kind: str, oid: str) -> bool:
    try:
        await ctx.remote.keystone_get(kind, oid)
    except RemoteNotFound:
        return False
    return True


async def grant_assignment(ctx: DriverContext, request: PendingRequest) -> None:
    """Grant the role; role, project and actor must already exist on the subcloud."""
    master_id = request.master_id or request.source_resource_id
    project, actor, role = split_assignment(master_id)
    if not await _exists(ctx, "roles", role):
        raise PermanentSyncError(f"role {role} missing on {ctx.region}")
    if not await _exists(ctx, "projects", project):
        raise PermanentSyncError(f"project {project} missing on {ctx.region}")
    if await _exists(ctx, "users", actor):
        actor_kind = "users"
    elif await _exists(ctx, "groups", actor):
        actor_kind = "groups"
    else:
        raise PermanentSyncError(f"actor {actor} missing on {ctx.region}")
    await ctx.remote.grant_role(project, actor_kind, actor, role)
    listed = await ctx.remote.role_assignments(
        project=project, actor_kind=actor_kind, actor=actor, role=role
    )
    if not listed:
        raise PermanentSyncError(f"assignment {master_id} not listed after the grant")
    await ctx.map(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, master_id, master_id)


async def revoke_assignment(ctx: DriverContext, request: PendingRequest) -> None:
    """Revoke as a user, then as a group; still listed afterwards is a failure."""
    master_id = request.master_id or request.source_resource_id
    mapping = await ctx.db.get_subcloud_resource(
        ctx.region, c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, master_id
    )
    target = mapping.subcloud_resource_id if mapping is not None else master_id
    try:
        project, actor, role = split_assignment(target)
    except PermanentSyncError:
        if mapping is not None:
            await ctx.unmap(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, master_id)
        return
    for actor_kind in ("users", "groups"):
        try:
            await ctx.remote.revoke_role(project, actor_kind, actor, role)
            break
        except RemoteNotFound:
            continue
    for actor_kind in ("users", "groups"):
        if await ctx.remote.role_assignments(
            project=project, actor_kind=actor_kind, actor=actor, role=role
        ):
            raise PermanentSyncError(f"assignment {master_id} still present after revoke")
    if mapping is not None:
        await ctx.unmap(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, master_id)


def _audit_id(request: PendingRequest) -> str:
    info = loads_info(request.resource_info)
    event = info.get("token_revoke_event") if isinstance(info, dict) else None
    audit_id = event.get("audit_id") if isinstance(event, dict) else None
    if request.resource_type == c.RESOURCE_REVOKE_EVENTS_FOR_USER:
        audit_id = audit_id or request.source_resource_id or request.master_id
    if not audit_id:
        raise PermanentSyncError("revocation event without an audit id")
    return str(audit_id)


async def create_revoke_event(ctx: DriverContext, request: PendingRequest) -> None:
    """Copy the master's revocation event record to the subcloud."""
    event_id = _audit_id(request)
    for_user = request.resource_type == c.RESOURCE_REVOKE_EVENTS_FOR_USER
    try:
        if for_user:
            event = await ctx.master.get_user_revoke_event(event_id)
        else:
            event = await ctx.master.get_revoke_event(event_id)
    except RemoteNotFound:
        raise PermanentSyncError(f"master has no revocation event {event_id}") from None
    with contextlib.suppress(RemoteConflict):  # the same event is already there
        await ctx.remote.create_revoke_event(event)
    await ctx.map(request.resource_type, request.master_id or event_id, event_id)


async def delete_revoke_event(ctx: DriverContext, request: PendingRequest) -> None:
    """Remove the event on the subcloud (missing: fine)."""
    master_id = request.master_id or request.source_resource_id
    mapping = await ctx.db.get_subcloud_resource(ctx.region, request.resource_type, master_id)
    event_id = mapping.subcloud_resource_id if mapping is not None else master_id
    try:
        if request.resource_type == c.RESOURCE_REVOKE_EVENTS_FOR_USER:
            await ctx.remote.delete_user_revoke_event(event_id)
        else:
            await ctx.remote.delete_revoke_event(event_id)
    except RemoteNotFound:
        pass
    if mapping is not None:
        await ctx.unmap(request.resource_type, master_id)
