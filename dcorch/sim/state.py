"""In-memory state of the simulated System Controller and subclouds.

Dicts keyed by id (or ``(kind, domain, name)`` for names): every request but listings is O(1).
A subcloud's state is built lazily from a shared template: 10,000 idle subclouds cost one small
:class:`CloudState` each; a touched one copies the template's containers, not its records.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from dcorch.sim.ca_files import CaFiles
from dcorch.sim.records import (
    DEFAULT_SYSADMIN_HASH,
    Record,
    default_identity_records,
    new_id,
)
from dcorch.sim.tokens import TokenCodec, new_fernet_key

if TYPE_CHECKING:
    from dcorch.sim.faults import FaultState

KINDS: Final = ("user", "group", "project", "role")
MAX_ACTIVE_KEYS: Final = 3
"""keystone's ``[fernet_tokens] max_active_keys`` default: staged, primary and one secondary."""
OPERATIONS_LOG_SIZE: Final = 512
"""Applied-operation log entries kept per cloud (a bounded ring: the bench must not grow it)."""

Assignment = tuple[str, str, str, str]
"""``(project_id, actor_type, actor_id, role_id)``; actor_type is ``user`` or ``group``."""


def name_of(kind: str, rec: Record) -> tuple[str, str, str]:
    """The name-index key of a record: names are unique per kind within a domain."""
    if kind == "user":
        return ("user", rec["user"]["domain_id"], rec["local_user"]["name"])
    body = rec[kind]
    return (kind, body["domain_id"], body["name"])


class Identity:
    """One keystone's objects, keyed by id, with a name index and reference upkeep."""

    __slots__ = (
        "assignments",
        "names",
        "next_event_id",
        "next_local_id",
        "revocations",
        "tables",
        "user_events",
    )

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Record]] = {k: {} for k in KINDS}
        self.names: dict[tuple[str, str, str], str] = {}
        self.assignments: set[Assignment] = set()
        self.revocations: dict[str, Record] = {}
        """Revocation events keyed by audit id, or by dcdbsync's per-user event id."""
        self.user_events: dict[str, dict[str, float]] = {}
        """user_id -> {event key: issued_before epoch}, so token checks are O(1)."""
        self.next_local_id = 1
        self.next_event_id = 1

    def clone(self) -> Identity:
        """Copy the containers, share the records (copy on write)."""
        other = Identity.__new__(Identity)
        other.tables = {k: dict(v) for k, v in self.tables.items()}
        other.names = dict(self.names)
        other.assignments = set(self.assignments)
        other.revocations = dict(self.revocations)
        other.user_events = {k: dict(v) for k, v in self.user_events.items()}
        other.next_local_id = self.next_local_id
        other.next_event_id = self.next_event_id
        return other

    @property
    def users(self) -> dict[str, Record]:
        return self.tables["user"]

    @property
    def groups(self) -> dict[str, Record]:
        return self.tables["group"]

    @property
    def projects(self) -> dict[str, Record]:
        return self.tables["project"]

    @property
    def roles(self) -> dict[str, Record]:
        return self.tables["role"]

    def find_name(self, kind: str, domain_id: str, name: str) -> Record | None:
        """The object of a kind with this name in this domain, or None."""
        oid = self.names.get((kind, domain_id, name))
        return None if oid is None else self.tables[kind][oid]

    def put(self, kind: str, rec: Record, replace_id: str | None = None) -> Record:
        """Insert or replace a record; ``replace_id`` lets the new record carry a new id.

        A new id takes over the old one's assignments and memberships, as dcdbsync's ``*_update``.
        """
        table = self.tables[kind]
        new = rec[kind]["id"]
        old_id = replace_id if replace_id is not None else new
        old = table.pop(old_id, None)
        if old is not None:
            self.names.pop(name_of(kind, old), None)
        if kind == "user":
            rec = self._number_user(rec, old)
        table[new] = rec
        self.names[name_of(kind, rec)] = new
        if old is not None and old_id != new:
            self._rename_refs(kind, old_id, new)
        return rec

    def remove(self, kind: str, oid: str) -> Record | None:
        """Delete an object and everything that references it (assignments, memberships)."""
        rec = self.tables[kind].pop(oid, None)
        if rec is None:
            return None
        self.names.pop(name_of(kind, rec), None)
        self.assignments = {a for a in self.assignments if oid not in (a[0], a[2], a[3])}
        if kind == "user":
            self._replace_members(lambda members: [m for m in members if m != oid])
        return rec

    def add_revocation(self, key: str, event: Record, user_epoch: float | None = None) -> None:
        """Store a revocation event (replacing one with the same key)."""
        self.revocations[key] = event
        if event.get("user_id") and user_epoch is not None:
            self.user_events.setdefault(event["user_id"], {})[key] = user_epoch

    def remove_revocation(self, key: str) -> Record | None:
        """Drop a revocation event by its key."""
        event = self.revocations.pop(key, None)
        if event is not None and event.get("user_id"):
            self.user_events.get(event["user_id"], {}).pop(key, None)
        return event

    def roles_of(self, user_id: str, project_id: str) -> list[str]:
        """Role ids a user holds on a project, directly or through a group."""
        groups = {g for g, rec in self.groups.items() if user_id in rec["local_user_ids"]}
        return sorted(
            {
                a[3]
                for a in self.assignments
                if a[0] == project_id and (a[2] == user_id or (a[1] == "group" and a[2] in groups))
            }
        )

    def _number_user(self, rec: Record, old: Record | None) -> Record:
        # local_user and password ids are per-cloud autoincrement columns, as in keystone
        local_id = old["local_user"]["id"] if old is not None else None
        if local_id is None:
            local_id = self.next_local_id
            self.next_local_id += 1
        local = {**rec["local_user"], "id": local_id}
        passwords = [{**p, "local_user_id": local_id} for p in rec.get("password", [])]
        return {**rec, "local_user": local, "password": passwords}

    def _rename_refs(self, kind: str, old: str, new: str) -> None:
        pos = {"project": (0,), "user": (2,), "group": (2,), "role": (3,)}[kind]

        def rename(a: Assignment) -> Assignment:
            parts = list(a)
            for i in pos:
                if parts[i] == old:
                    parts[i] = new
            return (parts[0], parts[1], parts[2], parts[3])

        self.assignments = {rename(a) for a in self.assignments}
        if kind == "user":
            self._replace_members(lambda ms: sorted(new if m == old else m for m in ms))

    def _replace_members(self, change: Callable[[list[str]], list[str]]) -> None:
        for gid, rec in list(self.groups.items()):
            members = change(rec["local_user_ids"])
            if members != rec["local_user_ids"]:
                self.groups[gid] = {**rec, "local_user_ids": members}


class Platform:
    """One sysinv's certificates, sysadmin iuser and fernet key repository."""

    __slots__ = ("_codec", "certificates", "fernet_keys", "iuser")

    def __init__(self, iuser: Record, fernet_keys: dict[int, str]) -> None:
        self.certificates: dict[str, Record] = {}
        self.iuser = iuser
        self.fernet_keys = fernet_keys
        self._codec: TokenCodec | None = None

    @property
    def codec(self) -> TokenCodec:
        """The token codec for the current key set (rebuilt after a key change)."""
        if self._codec is None:
            self._codec = TokenCodec(self.fernet_keys)
        return self._codec

    def set_fernet_keys(self, keys: dict[int, str]) -> None:
        """Replace the key repository (tokens signed by dropped keys stop validating)."""
        self.fernet_keys = dict(keys)
        self._codec = None

    def rotate_fernet_keys(self, max_active_keys: int = MAX_ACTIVE_KEYS) -> list[int]:
        """Rotate the repository as ``keystone-manage fernet_rotate`` does; returns the key ids.

        The staged key 0 becomes the primary under the next id (so tokens it signs already
        decrypt wherever the previous repository was distributed), a new staged key 0 is made,
        and the oldest secondaries go until ``max_active_keys`` keys are left: tokens signed
        only by those stop validating.
        """
        if max_active_keys < 2:
            raise ValueError("max_active_keys must keep at least the staged and primary keys")
        keys = dict(self.fernet_keys)
        primary = max(keys, default=0) + 1
        keys[primary] = keys.pop(0) if 0 in keys else new_fernet_key()
        keys[0] = new_fernet_key()
        for old in sorted((i for i in keys if i != 0), reverse=True)[max_active_keys - 1 :]:
            del keys[old]
        self.set_fernet_keys(keys)
        return sorted(keys)


def new_platform() -> Platform:
    """A fresh sysinv: its own fernet keys and iuser uuid, the default sysadmin hash."""
    iuser = {
        "uuid": str(uuid.uuid4()),
        "root_sig": "sim-root-sig",
        "passwd_hash": DEFAULT_SYSADMIN_HASH,
        "passwd_expiry_days": 90,
        "passwd_last_change": None,
        "reserved_1": None,
    }
    return Platform(iuser, {0: new_fernet_key(), 1: new_fernet_key()})


class CloudState:
    """One simulated cloud (the master or a subcloud); heavy parts are built on first use."""

    __slots__ = (
        "_identity",
        "_operations",
        "_platform",
        "counters",
        "faults",
        "is_master",
        "op_seq",
        "region",
        "sim",
    )

    def __init__(self, sim: SimState, region: str, *, is_master: bool = False) -> None:
        self.sim = sim
        self.region = region
        self.is_master = is_master
        self._identity: Identity | None = None
        self._platform: Platform | None = None
        self._operations: collections.deque[dict[str, Any]] | None = None
        self.counters: dict[str, int] | None = None
        self.faults: FaultState | None = None
        self.op_seq = 0

    def __repr__(self) -> str:
        kind = "master" if self.is_master else "subcloud"
        touched = "materialised" if self._identity is not None else "pristine"
        return f"<CloudState {kind} {self.region} {touched}>"

    @property
    def identity(self) -> Identity:
        """This cloud's keystone objects (built from the template on first access)."""
        if self._identity is None:
            self._identity = self.sim.new_identity(self)
        return self._identity

    @property
    def identity_is_pristine(self) -> bool:
        """True while the identity state is still exactly the shared template."""
        return self._identity is None

    @property
    def platform(self) -> Platform:
        """This cloud's sysinv objects (built on first access)."""
        if self._platform is None:
            self._platform = new_platform()
        return self._platform

    @property
    def operations(self) -> list[dict[str, Any]]:
        """The applied-operations log, oldest first (bounded, see OPERATIONS_LOG_SIZE)."""
        return list(self._operations or ())

    def record(self, service: str, op: str, **details: Any) -> None:
        """Append to the applied-operations log (a successful state change)."""
        if self._operations is None:
            self._operations = collections.deque(maxlen=OPERATIONS_LOG_SIZE)
        self.op_seq += 1
        self._operations.append({"seq": self.op_seq, "service": service, "op": op, **details})

    def count(self, route: str) -> None:
        """Count one request on a route (``GET keystone users/{}``)."""
        if self.counters is None:
            self.counters = {}
        self.counters[route] = self.counters.get(route, 0) + 1


class SimState:
    """Every simulated cloud, plus the admin credentials they all share."""

    def __init__(
        self,
        *,
        admin_user: str,
        admin_password: str,
        admin_project: str,
        master_region: str,
        name_prefix: str,
        wall_clock: Callable[[], float],
        distinct_default_ids: bool = False,
        ca_dir: str = "",
    ) -> None:
        """``ca_dir``: where the master keeps its CA files (``master.ca_cert_dir``; empty: none)."""
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.admin_project = admin_project
        self.name_prefix = name_prefix
        self.wall_clock = wall_clock
        self.distinct_default_ids = distinct_default_ids
        self.token_ttl = 3600.0
        self.default_latency_ms = 0.0
        self.seed = 0
        self._template = self._build_identity(new_id)
        self.master = CloudState(self, master_region, is_master=True)
        self.subclouds: dict[str, CloudState] = {}
        self._next_index = 1
        self.reports: dict[tuple[str, str], collections.deque[dict[str, Any]]] = {}
        self.report_count = 0
        self.master_faults: dict[str, FaultState] = {}
        """Service name (``keystone``, ``dcdbsync``, ...) -> faults of that master service."""
        self.master_ca_files = CaFiles(ca_dir)
        """The master's CA files on disk (written by its sysinv's certificate installs)."""

    def _build_identity(self, make_id: Callable[[], str]) -> Identity:
        identity = Identity()
        users, projects, roles, assignments = default_identity_records(
            self.admin_password, self.wall_clock(), make_id
        )
        for kind, recs in (("project", projects), ("role", roles), ("user", users)):
            for rec in recs:
                identity.put(kind, rec)
        identity.assignments = assignments
        return identity

    def new_identity(self, cloud: CloudState) -> Identity:
        """The starting identity of a cloud: the shared template, or fresh ids if asked."""
        if self.distinct_default_ids and not cloud.is_master:
            return self._build_identity(new_id)
        return self._template.clone()

    @property
    def template_identity(self) -> Identity:
        """The defaults every pristine subcloud equals (read-only by convention)."""
        return self._template

    def add_subclouds(self, count: int = 0, names: list[str] | None = None) -> list[str]:
        """Add ``count`` subclouds named ``<prefix><n>`` and/or the given names."""
        added: list[str] = []
        for _ in range(count):
            while f"{self.name_prefix}{self._next_index}" in self.subclouds:
                self._next_index += 1
            added.append(f"{self.name_prefix}{self._next_index}")
            self._next_index += 1
        added += [n for n in names or () if n not in self.subclouds and n not in added]
        for region in added:
            self.subclouds[region] = CloudState(self, region)
        return added

    def remove_subcloud(self, region: str) -> bool:
        """Forget a subcloud; False if it did not exist."""
        return self.subclouds.pop(region, None) is not None

    def cloud(self, region: str) -> CloudState | None:
        """The master (by its region name) or a subcloud, or None."""
        if region == self.master.region:
            return self.master
        return self.subclouds.get(region)
