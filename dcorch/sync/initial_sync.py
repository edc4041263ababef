"""Initial sync of one subcloud (docs/behaviour.md#initial-sync), run by its sync actor.

1. CAS ``requested -> in-progress`` (0 rows: someone else changed it; stop);
2. unless ``subsequent_sync``, ID reconciliation: objects of the same name and domain but another
   id, and always the ``admin``/``sysinv``/``dcmanager`` users, get the master's record (dcdbsync);
3. distribute the master's fernet keys if the subcloud syncs the platform endpoint type (keys live
   in sysinv; errors only logged: a later audit repairs them);
4. reset the pairs' audit and report fields: the audit runs at once, the status is re-announced;
5. CAS ``in-progress -> completed`` (with ``subsequent_sync`` set) or ``-> failed``; if it fails,
   the subcloud was unmanaged or went offline meanwhile: nothing more is done.

A failure is logged with the URL that could not be reached and handed to ``on_failure`` (the
sync actor keeps it for ``GET .../initial-sync``, docs/behaviour.md#initial-sync).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.rows import SubcloudRow
from dcorch.remote.clients import CloudClient
from dcorch.remote.errors import MasterUnavailable, SyncError
from dcorch.sync import audit_rules as rules

logger = logging.getLogger(__name__)

ALWAYS_RECONCILED_USERS: Final = frozenset({"admin", "sysinv", "dcmanager"})
RECONCILED_KINDS: Final = ("projects", "roles", "users", "groups")
"""Projects and roles first: users' default projects and assignments refer to them."""


class InitialSyncOutcome(enum.Enum):
    SKIPPED = "skipped"
    """The CAS found the subcloud no longer ``requested``."""
    COMPLETED = c.INITIAL_SYNC_COMPLETED
    FAILED = c.INITIAL_SYNC_FAILED
    CANCELLED = "cancelled"
    """The final CAS lost: the subcloud was unmanaged/went offline during the sync."""


@dataclass(frozen=True, slots=True)
class InitialSyncFailure:
    """Why the last initial sync of a subcloud failed (what ``GET .../initial-sync`` shows)."""

    error: str
    url: str | None
    """The endpoint that could not be reached or failed (None: a failure of the data)."""
    master_dependency: str | None
    """``keystone``, ``dbsync``, ... when it was the master's, None when the subcloud's."""
    at: datetime

    @classmethod
    def of(cls, exc: SyncError, at: datetime) -> InitialSyncFailure:
        dependency = exc.dependency if isinstance(exc, MasterUnavailable) else None
        return cls(str(exc), exc.url, dependency, at)

    def as_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "url": self.url,
            "master_dependency": self.master_dependency,
            "at": self.at.isoformat(),
        }


async def run_initial_sync(
    db: Database,
    subcloud: SubcloudRow,
    remote: CloudClient,
    master: CloudClient,
    *,
    on_failure: Callable[[SyncError], None] | None = None,
) -> InitialSyncOutcome:
    """Run steps 1-5 above (without the enable-time audit, which the actor runs next)."""
    region = subcloud.region_name
    if not await db.set_initial_sync_state(
        region, c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_IN_PROGRESS
    ):
        return InitialSyncOutcome.SKIPPED
    reconciled = subcloud.subsequent_sync
    try:
        if not subcloud.subsequent_sync and any(
            e.startswith(c.ENDPOINT_TYPE_IDENTITY) for e in subcloud.endpoint_types
        ):
            await reconcile_identity_ids(remote, master)
            reconciled = True
        if c.ENDPOINT_TYPE_PLATFORM in subcloud.endpoint_types:
            await distribute_fernet_keys(region, remote, master)
        for ept in subcloud.endpoint_types:
            await db.update_subcloud_sync(
                region,
                ept,
                audit_status=c.AUDIT_NONE,
                sync_status_reported=c.SYNC_STATUS_NONE,
                sync_status_report_time=None,
                last_audit_time=None,
            )
        final = InitialSyncOutcome.COMPLETED
    except SyncError as exc:
        # A master outage is logged once by its tracker (WARNING); this line still names it.
        level = logging.INFO if isinstance(exc, MasterUnavailable) else logging.WARNING
        logger.log(level, "initial_sync.failed region=%s url=%s error=%s", region, exc.url, exc)
        if on_failure is not None:
            on_failure(exc)
        final = InitialSyncOutcome.FAILED
    moved = await db.set_initial_sync_state(
        region,
        c.INITIAL_SYNC_IN_PROGRESS,
        final.value,
        subsequent_sync=True if final is InitialSyncOutcome.COMPLETED and reconciled else None,
    )
    if not moved:
        logger.info("initial_sync.cancelled region=%s", region)
        return InitialSyncOutcome.CANCELLED
    logger.info("initial_sync.%s region=%s", final.value, region)
    return final


async def reconcile_identity_ids(remote: CloudClient, master: CloudClient) -> int:
    """Give same-named subcloud objects the master's ids; returns how many were rewritten.

    Raises:
        SyncError: a call failed, or master/subcloud returned no users, projects or roles.
    """
    rewritten = 0
    for kind in RECONCILED_KINDS:
        master_records = await master.list_records(kind)
        sub_records = await remote.list_records(kind)
        if kind != "groups" and (not master_records or not sub_records):
            raise SyncError(f"no {kind} returned by the master or the subcloud")
        by_name = {rules.name_key(kind, r): r for r in sub_records}
        for record in master_records:
            if rules.is_excluded(kind, record):
                continue
            sub = by_name.get(rules.name_key(kind, record))
            if sub is None:
                continue  # missing objects are created by the audit that follows
            master_id, sub_id = rules.object_id(kind, record), rules.object_id(kind, sub)
            forced = kind == "users" and rules.name_key(kind, record)[1] in ALWAYS_RECONCILED_USERS
            if master_id != sub_id or (forced and not rules.same_record(kind, record, sub)):
                await remote.replace_record(kind, sub_id, record)
                rewritten += 1
    return rewritten


async def distribute_fernet_keys(region: str, remote: CloudClient, master: CloudClient) -> bool:
    """POST the master's keys to the subcloud; failures are logged, not raised (step 3 above)."""
    try:
        keys = await master.get_fernet_keys()
        if keys:
            await remote.post_fernet_keys(keys)
    except SyncError as exc:
        logger.warning("initial_sync.keys_failed region=%s url=%s error=%s", region, exc.url, exc)
        return False
    return True
