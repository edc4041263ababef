"""The audit of one pair: compare master, dcorch's database and the subcloud; queue repairs.

Runs in the pair's sync actor, so audits of one pair never overlap (upstream dd30c8c2,
docs/behaviour.md#engine) nor race its sync. Each repair is a :class:`WorkOrder` for this subcloud
and a finding, even a discrepancy's ``put``, which upstream forgot, reporting pairs in-sync with
work queued (docs/behaviour.md#uncounted-discrepancy-repairs). Failed requests are cleaned per
pair; the next audit re-detects their cause (docs/behaviour.md#global-failed-request-cleanup).

Identity, in the order of docs/behaviour.md#audit: users, groups, projects, roles (dcdbsync
records), project role assignments, revocation events by audit id and per user. Platform:
certificates, the sysadmin iuser and the fernet keys. Repairs are queued in that order and run
in id order, so an assignment is granted after the user it names is created.

A password discrepancy of the ``admin`` user gets a keystone PATCH of the central password
*before* the dcdbsync PUT (9e209f4e): only the PATCH updates the subcloud's keyring (a DB write
bypasses it); the PUT then makes the record, hash included, the master's. The PATCH's
resource_info only says "the central password": the driver fills it in, so the database never
holds it (docs/behaviour.md#audit).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from dcorch import constants as c
from dcorch.db.database import Database
from dcorch.db.rows import RequestUpdate
from dcorch.db.schema import utcnow
from dcorch.remote.clients import CachedMasterClient, CloudClient, Record, singular
from dcorch.sync import audit_rules as rules
from dcorch.sync.drivers.identity import CENTRAL_PASSWORD
from dcorch.sync.pair_sync import FINAL_BAD_STATES, WORK_STATES
from dcorch.sync.status import WallClock
from dcorch.work import WorkOrder, WorkSink

logger = logging.getLogger(__name__)

IDENTITY_KINDS = ("users", "groups", "projects", "roles")


@dataclass(slots=True)
class AuditResult:
    findings: int = 0
    orders: list[WorkOrder] = field(default_factory=list)


class PairAudit:
    """Audit of one (subcloud, endpoint type) pair."""

    def __init__(
        self,
        db: Database,
        region: str,
        endpoint_type: str,
        remote: CloudClient,
        master: CachedMasterClient,
        sink: WorkSink,
        *,
        wall_clock: WallClock = utcnow,
        keyring: bool = False,
    ) -> None:
        """``keyring``: the central admin password is known (the driver applying the requests
        has it), so an ``admin`` password discrepancy queues the keyring PATCH first."""
        self._db = db
        self.region = region
        self.endpoint_type = endpoint_type
        self._remote = remote
        self._master = master
        self._sink = sink
        self._clock = wall_clock
        self._keyring = keyring

    async def run(self) -> AuditResult:
        """Compare, queue the repairs (one transaction), clean this pair's failed requests."""
        live = await self._db.pending_requests(
            self.region, self.endpoint_type, states=WORK_STATES + FINAL_BAD_STATES
        )
        # This audit retires the pair's failed-like requests from before it (it re-detects what
        # they were for). timed-out/aborted become failed first, and before ``started``, so the
        # one unit at the end that removes failed requests changed up to ``started`` takes them.
        stale = [
            RequestUpdate(r.id, state=c.ORCH_REQUEST_FAILED)
            for r in live
            if r.state in (c.ORCH_REQUEST_TIMED_OUT, c.ORCH_REQUEST_ABORTED)
        ]
        if stale:
            await self._db.update_requests(stale)
        started = self._clock()
        busy: dict[str, set[str]] = {}
        for r in live:
            if r.state in WORK_STATES:
                busy.setdefault(r.resource_type, set()).add(r.source_resource_id)
        result = AuditResult()
        if self.endpoint_type == c.ENDPOINT_TYPE_PLATFORM:
            await self._platform(result, busy)
        else:
            for kind in IDENTITY_KINDS:
                await self._identity_kind(kind, result, busy.get(kind, set()))
            await self._assignments(result, busy.get(c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS, set()))
            await self._revoke_events(result, busy)
        if result.orders:
            # Work queued while we compared (the abort set is from the start): drop repairs it
            # duplicates, or a late audit create could land after a proxy delete of the object.
            now_busy = {
                (r.resource_type, r.source_resource_id)
                for r in await self._db.pending_requests(
                    self.region, self.endpoint_type, states=WORK_STATES
                )
            }
            orders = [
                o for o in result.orders if (o.resource_type, o.source_resource_id) not in now_busy
            ]
            if orders:
                await self._sink.submit(orders)
        await self._db.soft_delete_failed_requests(self.region, self.endpoint_type, started)
        logger.info(
            "audit.done region=%s endpoint=%s findings=%d",
            self.region,
            self.endpoint_type,
            result.findings,
        )
        return result

    def _order(self, result: AuditResult, rtype: str, source_id: str, op: str, info: Any) -> None:
        result.findings += 1
        result.orders.append(
            WorkOrder(
                endpoint_type=self.endpoint_type,
                resource_type=rtype,
                source_resource_id=source_id,
                operation_type=op,
                resource_info=json.dumps(info),
                subcloud=self.region,
            )
        )

    async def _identity_kind(self, kind: str, result: AuditResult, busy: set[str]) -> None:
        # dcorch's rows first: master listings are fetched after the last commit (MasterReads),
        # so a new object never looks "deleted on the master" (stale-cache bug 3aa52731/20f8fd05).
        known = {r.master_id for r in await self._db.list_resources(kind)}
        listing = await self._master.list_records(kind)
        master = [r for r in listing if not rules.is_excluded(kind, r)]
        sub = await self._remote.list_records(kind)
        by_id = {rules.object_id(kind, r): r for r in sub}
        by_name = {rules.name_key(kind, r): r for r in sub}
        mappings = {
            m.master_id: m for m in await self._db.list_subcloud_resources(self.region, kind)
        }
        for record in master:
            mid = rules.object_id(kind, record)
            known.discard(mid)
            if not mid:
                continue
            if mid in busy:
                result.findings += 1
                continue
            mapping = mappings.get(mid)
            if mapping is not None and mapping.shared_config_state == c.SHARED_CONFIG_UNMANAGED:
                continue
            target = by_id.get(mapping.subcloud_resource_id if mapping else mid) or by_id.get(mid)
            if target is not None and rules.same_record(kind, record, target):
                if mapping is None:
                    await self._db.upsert_subcloud_resource(self.region, kind, mid, mid)
                continue
            candidate = target or by_name.get(rules.name_key(kind, record))
            if candidate is not None:
                sc_id = rules.object_id(kind, candidate)
                if self._keyring_user(kind, record, candidate):
                    await self._keyring_patch(result, mid, sc_id, mapping is None)
                self._order(result, kind, mid, c.OPERATION_PUT, {singular(kind): {"id": sc_id}})
            else:
                self._order(result, kind, mid, c.OPERATION_POST, record)
        for mid in sorted(known):
            if mid in busy:
                result.findings += 1
                continue
            mapping = mappings.get(mid)
            if (
                mapping is not None
                and mapping.shared_config_state == c.SHARED_CONFIG_MANAGED
                and mapping.subcloud_resource_id in by_id
            ):
                self._order(result, kind, mid, c.OPERATION_DELETE, {})

    def _keyring_user(self, kind: str, record: Record, candidate: Record) -> bool:
        """The keyring user's password differs: other details alone leave the keyring right."""
        return (
            kind == "users"
            and self._keyring
            and rules.name_key(kind, record) == rules.KEYRING_USER
            and not rules.same_passwords(record, candidate)
        )

    async def _keyring_patch(
        self, result: AuditResult, mid: str, sc_id: str, unmapped: bool
    ) -> None:
        """Queue the keystone password PATCH that must precede the admin user's PUT."""
        if unmapped:
            # The PATCH is applied through the mapping; the PUT re-maps to the master id.
            await self._db.upsert_subcloud_resource(self.region, "users", mid, sc_id)
        info = {CENTRAL_PASSWORD: True}
        self._order(result, "users", mid, c.OPERATION_PATCH, info)

    async def _assignments(self, result: AuditResult, busy: set[str]) -> None:
        """Project-scoped role assignments whose actor, role and project are synced."""
        excluded: set[str] = set()
        for kind in ("users", "roles"):
            excluded |= {
                rules.object_id(kind, r)
                for r in await self._master.list_records(kind)
                if rules.is_excluded(kind, r)
            }
        master = set()
        for entry in await self._master.role_assignments():
            aid = rules.assignment_id(entry)
            if aid and not excluded & set(aid.split("_")):
                master.add(aid)
        sub = {rules.assignment_id(e) for e in await self._remote.role_assignments()}
        rtype = c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS
        mappings = {
            m.master_id: m for m in await self._db.list_subcloud_resources(self.region, rtype)
        }
        for aid in sorted(master):
            if aid in busy:
                result.findings += 1
            elif aid not in sub:
                self._order(result, rtype, aid, c.OPERATION_POST, {})
            elif aid not in mappings:
                await self._db.upsert_subcloud_resource(self.region, rtype, aid, aid)
        for mid, m in sorted(mappings.items()):
            if mid in master:
                continue
            if mid in busy:
                result.findings += 1
            elif m.shared_config_state == c.SHARED_CONFIG_MANAGED and m.subcloud_resource_id in sub:
                self._order(result, rtype, mid, c.OPERATION_DELETE, {})

    async def _revoke_events(self, result: AuditResult, busy: dict[str, set[str]]) -> None:
        """Revocation events by audit id, then per-user events (keyed by user and time)."""

        master_events = await self._master.list_revoke_events()
        sub_events = await self._remote.list_revoke_events()
        by_audit = c.RESOURCE_REVOKE_EVENTS, lambda e: str(e.get("audit_id") or "")
        by_user = c.RESOURCE_REVOKE_EVENTS_FOR_USER, rules.user_event_key
        for rtype, key_of in (by_audit, by_user):
            master = {k for k in map(key_of, master_events) if k}
            sub = {k for k in map(key_of, sub_events) if k}
            pending = busy.get(rtype, set())
            for key in sorted(master):
                if key in pending:
                    result.findings += 1
                elif key not in sub:
                    info = {"token_revoke_event": {"audit_id": key}} if rtype == by_audit[0] else {}
                    self._order(result, rtype, key, c.OPERATION_POST, info)
            for m in await self._db.list_subcloud_resources(self.region, rtype):
                if m.master_id not in master and m.subcloud_resource_id in sub:
                    self._order(result, rtype, m.master_id, c.OPERATION_DELETE, {})

    async def _platform(self, result: AuditResult, busy: dict[str, set[str]]) -> None:
        await self._certificates(result, busy.get(c.RESOURCE_CERTIFICATES, set()))
        master_users = await self._master.list_iusers()
        sub_users = await self._remote.list_iusers()
        if master_users and sub_users:
            mu = master_users[0]
            if str(mu.get("uuid")) in busy.get(c.RESOURCE_IUSER, set()):
                result.findings += 1
            elif not rules.same_iuser(mu, sub_users[0]):
                payload = {k: mu.get(k) for k in ("passwd_hash", "root_sig", "passwd_expiry_days")}
                self._order(
                    result,
                    c.RESOURCE_IUSER,
                    str(mu.get("uuid")),
                    c.OPERATION_PATCH,
                    {"payload": payload},
                )

        master_keys = await self._master.get_fernet_keys()
        if "keys" in busy.get(c.RESOURCE_FERNET_REPO, set()):
            result.findings += 1
        elif master_keys and rules.fernet_digest(master_keys) != rules.fernet_digest(
            await self._remote.get_fernet_keys()
        ):
            self._order(
                result,
                c.RESOURCE_FERNET_REPO,
                "keys",
                c.OPERATION_PATCH,
                rules.fernet_info(master_keys),
            )

    async def _certificates(self, result: AuditResult, busy: set[str]) -> None:
        master = {
            str(cert["signature"]): cert
            for cert in await self._master.list_certificates()
            if rules.synced_certificate(cert)
        }
        present = {str(cert.get("signature")) for cert in await self._remote.list_certificates()}
        for signature, cert in master.items():
            if signature in busy:
                result.findings += 1
            elif signature not in present:
                self._order(
                    result,
                    c.RESOURCE_CERTIFICATES,
                    signature,
                    c.OPERATION_CREATE,
                    {"payload": cert},
                )
        mappings = await self._db.list_subcloud_resources(self.region, c.RESOURCE_CERTIFICATES)
        for m in mappings:
            if m.master_id not in master and m.subcloud_resource_id in present:
                self._order(result, c.RESOURCE_CERTIFICATES, m.master_id, c.OPERATION_DELETE, {})
