"""The dcdbsync record contract: what a request may carry, checked the same way everywhere.

dcorch replicates keystone objects as *DB records* (``{"user": {...}, "local_user": {...},
"password": [...], "user_option": [...]}``; ``docs/dbsync.md#records``). Both servers of that
contract, the DB-sync agent over a real keystone database and the simulator's in-memory
dcdbsync, validate bodies here against a description of keystone's tables
(:class:`TableSpec`): the agent's is reflected from the database, the simulator's is a static
copy that a contract test holds equal to the reflected one. So the same input gets the same
status from both, and a record the simulator accepts is one a real keystone would take.

Pure functions, no I/O and no SQLAlchemy (text is storable as :mod:`dcorch.text` says): values
here are JSON-level (datetimes as text in one canonical form, :func:`format_datetime`),
converted to driver values by the agent alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from dcorch.text import storable_text

Record = dict[str, Any]
ColumnKind = Literal["str", "int", "bool", "datetime", "date"]

KIND_TABLES: Final = {"users": "user", "groups": "group", "projects": "project", "roles": "role"}
"""dcdbsync collection -> keystone table of the object (and the record's section name)."""

USER_SECTIONS: Final = ("user", "local_user", "password", "user_option")
GROUP_MEMBERS: Final = "local_user_ids"
"""The group record's member list: user ids (keystone's user_group_membership.user_id)."""

IGNORED_COLUMNS: Final = {
    "local_user": frozenset({"id", "user_id"}),
    "password": frozenset({"id", "local_user_id"}),
    "user_option": frozenset({"user_id"}),
    "revocation_event": frozenset({"id"}),
}
"""Columns a request may carry but the server sets itself: per-cloud autoincrement ids and the
links to the owning row (upstream's dcdbsync drops them the same way)."""

ROOT_DOMAIN: Final = "<<keystone.domain.root>>"
"""keystone's root pseudo-project: the domain of every domain (a domain is a project row)."""
NULL_DOMAIN: Final = "<<null>>"
"""keystone's stored domain_id of a global role."""

INT_LIMITS: Final = {32: 2**31 - 1, 64: 2**63 - 1}


class RecordError(Exception):
    """A request the contract refuses: ``status`` (400, 404, 409) and a message naming why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One keystone column as far as validation cares."""

    name: str
    kind: ColumnKind
    nullable: bool
    required: bool
    """Must be given on insert: NOT NULL, no server default, not an autoincrement key."""
    max_length: int | None = None
    """VARCHAR length (None for TEXT and non-strings)."""
    int_bits: int = 64
    """32 for INTEGER, 64 for BIGINT."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The validated columns of one keystone table, by name."""

    name: str
    columns: Mapping[str, ColumnSpec]


Specs = Mapping[str, TableSpec]
"""Table name -> its spec (user, local_user, password, user_option, group, project, role,
revocation_event)."""


# -- datetimes ---------------------------------------------------------------------------------


def format_datetime(moment: datetime) -> str:
    """The canonical text of a keystone DATETIME: UTC, no zone, always microseconds."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_datetime(text: str) -> datetime:
    """A naive UTC datetime from ISO text (``T`` or space, optional fraction, zone or ``Z``).

    Raises:
        ValueError: not a datetime.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_date(text: str) -> date:
    """A DATE from ``YYYY-MM-DD`` (or datetime text, whose date part is kept)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return parse_datetime(text).date()


def json_value(value: Any) -> Any:
    """A database value as the contract serves it (datetimes as canonical text)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


# -- revocation event ids ------------------------------------------------------------------------


def user_event_id(user_id: str, issued_before: str) -> str:
    """dcdbsync's id of a per-user revocation event: url-safe b64 of ``<user_id>_<issued_at>``.

    ``<issued_at>`` is the event's ``issued_before`` in canonical text (:func:`format_datetime`).
    """
    return base64.urlsafe_b64encode(f"{user_id}_{issued_before}".encode()).decode()


def parse_user_event_id(event_id: str) -> tuple[str, datetime]:
    """``(user_id, issued_before)`` of a per-user event id.

    Raises:
        RecordError: 404 when the id does not decode (no such event can exist).
    """
    try:
        text = base64.urlsafe_b64decode(event_id.encode()).decode()
        user_id, issued = text.split("_", 1)
        if not storable_text(user_id):  # no user has it; PostgreSQL refuses a NUL in a query
            raise ValueError(user_id)
        return user_id, parse_datetime(issued)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise RecordError(404, "Invalid event ID format") from None


# -- rows ----------------------------------------------------------------------------------------


def check_row(spec: TableSpec, row: Any, where: str, *, complete: bool) -> Record:
    """The row's columns, type-checked and canonical; ``complete``: every required one present.

    Columns in :data:`IGNORED_COLUMNS` are dropped. Raises :class:`RecordError` (400) naming the
    first offending ``<where>.<column>``.
    """
    if not isinstance(row, dict):
        raise RecordError(400, f"{where} must be an object")
    ignored = IGNORED_COLUMNS.get(spec.name, frozenset())
    checked: Record = {}
    for key, value in row.items():
        if key in ignored:
            continue
        column = spec.columns.get(key)
        if column is None:
            raise RecordError(400, f"{where}.{key} is not a column of keystone's {spec.name} table")
        checked[key] = _check_value(column, value, f"{where}.{key}")
    if complete:
        for column in spec.columns.values():
            if column.required and column.name not in ignored and column.name not in checked:
                raise RecordError(400, f"{where}.{column.name} is required")
    return checked


def _check_value(column: ColumnSpec, value: Any, where: str) -> Any:
    if value is None:
        if not column.nullable:
            raise RecordError(400, f"{where} may not be null")
        return None
    kind = column.kind
    if kind == "str":
        if not isinstance(value, str):
            raise RecordError(400, f"{where} must be a string")
        if not storable_text(value):
            raise RecordError(400, f"{where} holds a NUL or a lone surrogate (not storable text)")
        if column.max_length is not None and len(value) > column.max_length:
            raise RecordError(400, f"{where} is longer than {column.max_length} characters")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(400, f"{where} must be an integer")
        if abs(value) > INT_LIMITS[column.int_bits]:
            raise RecordError(400, f"{where} is out of range")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise RecordError(400, f"{where} must be true or false")
        return value
    if not isinstance(value, str):
        raise RecordError(400, f"{where} must be a date/time text")
    try:
        if kind == "date":
            return parse_date(value).isoformat()
        return format_datetime(parse_datetime(value))
    except ValueError:
        raise RecordError(400, f"{where} is not a valid date/time: {value!r}") from None


def _check_rows(spec: TableSpec, rows: Any, where: str) -> list[Record]:
    if not isinstance(rows, list):
        raise RecordError(400, f"{where} must be a list")
    return [check_row(spec, r, f"{where}[{i}]", complete=True) for i, r in enumerate(rows)]


# -- records -------------------------------------------------------------------------------------


def parse_record(kind: str, body: Any, specs: Specs) -> Record:
    """The sections a create or replace body carries, each type-checked (not yet complete).

    Sections: users ``user``, ``local_user`` (both objects, required), ``password`` and
    ``user_option`` (lists of complete rows, optional); groups ``group`` and ``local_user_ids``
    (a list of distinct user ids); projects ``project``; roles ``role``. Anything else is a 400.
    """
    table = KIND_TABLES[kind]
    if not isinstance(body, dict) or not body:
        raise RecordError(400, "Body required")
    allowed = {
        "user": USER_SECTIONS,
        "group": ("group", GROUP_MEMBERS),
    }.get(table, (table,))
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RecordError(400, f"unknown section {unknown[0]!r} in a {table} record")
    if not isinstance(body.get(table), dict):
        raise RecordError(400, f"{table} record required")
    record: Record = {table: check_row(specs[table], body[table], table, complete=False)}
    if table == "user":
        if not isinstance(body.get("local_user"), dict):
            raise RecordError(400, "local_user record required")
        record["local_user"] = check_row(
            specs["local_user"], body["local_user"], "local_user", complete=False
        )
        for section in ("password", "user_option"):
            if section in body:
                record[section] = _check_rows(specs[section], body[section], section)
    if table == "group" and GROUP_MEMBERS in body:
        members = body[GROUP_MEMBERS]
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise RecordError(400, f"{GROUP_MEMBERS} must be a list of user ids")
        if len(set(members)) != len(members):
            raise RecordError(400, f"{GROUP_MEMBERS} lists a user twice")
        record[GROUP_MEMBERS] = sorted(members)
    return record


def check_addressable(oid: str, where: str) -> None:
    """An id that a later ``GET <kind>/<id>`` can name: no ``/`` (a path splits on it, escaped
    or not) and not ``.`` or ``..`` (clients resolve those away). Stored anyway, such records
    could never be read, replaced or found again (``./just fuzz``)."""
    if "/" in oid or oid in (".", ".."):
        raise RecordError(400, f"{where} {oid!r} cannot be named in a URL")


def complete_record(kind: str, record: Record, specs: Specs) -> Record:
    """Check a record about to be stored (created, or merged over the old one) is whole.

    Every required column present, an id, a name, a group's member list, and a user's
    local_user in the user's domain (keystone's ``local_user -> user (id, domain_id)`` key).
    """
    table = KIND_TABLES[kind]
    body = check_row(specs[table], record[table], table, complete=True)
    if not isinstance(body.get("id"), str) or not body["id"]:
        raise RecordError(400, f"{table} id required")
    check_addressable(body["id"], f"{table}.id")
    named = record["local_user"] if table == "user" else body
    if table == "user":
        check_row(specs["local_user"], named, "local_user", complete=True)
        if named.get("domain_id") != body.get("domain_id"):
            raise RecordError(400, "local_user.domain_id must equal user.domain_id")
    if not isinstance(named.get("name"), str) or not named["name"]:
        raise RecordError(400, f"{table.capitalize()} name required")
    if table == "group" and not isinstance(record.get(GROUP_MEMBERS), list):
        raise RecordError(400, f"{GROUP_MEMBERS} required")
    return record


def merge_record(kind: str, old: Record, given: Record) -> Record:
    """What a replace stores: object sections merged over the old ones, lists replaced if given."""
    merged: Record = {}
    for section in [*old, *(s for s in given if s not in old)]:
        value = old.get(section)
        if isinstance(value, dict):
            merged[section] = {**value, **given.get(section, {})}
        else:
            merged[section] = given.get(section, value)
    return merged


def parse_event(body: Any, spec: TableSpec) -> Record:
    """A revocation event to create: ``{"revocation_event": {...}}``, complete, with an owner."""
    event = body.get("revocation_event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        raise RecordError(400, "revocation_event record required")
    row = check_row(spec, event, "revocation_event", complete=True)
    if row.get("audit_id") == "":
        # An empty audit id made a per-user event no lookup finds: users/<id> wants it null
        # (found by ./just fuzz: the agent stored it, then answered 404 for it).
        raise RecordError(
            400, "revocation_event.audit_id may not be empty (null: a per-user event)"
        )
    if not (row.get("audit_id") or row.get("user_id")):
        raise RecordError(400, "revocation_event with audit_id or user_id required")
    if row.get("audit_id"):
        check_addressable(str(row["audit_id"]), "revocation_event.audit_id")
    return row
