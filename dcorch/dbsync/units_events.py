"""Units of work over keystone's ``revocation_event`` table.

An event is addressed by its audit id (a revoked token) or, without one, by its user and
``issued_before`` (every token of that user issued before then: a password change, a disable),
whose dcdbsync id is :func:`~dcorch.dbsync.contract.user_event_id`. One event per address: a
second create of the same one is a 409, so the engine's "already there" path applies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from dcorch.dbsync.contract import Record, RecordError
from dcorch.dbsync.schema import KeystoneSchema
from dcorch.dbsync.units_objects import db_values, json_row

WRAPPER = "revocation_event"


def _where(schema: KeystoneSchema, audit_id: str | None, user: tuple[str, datetime] | None) -> Any:
    t = schema.tables["revocation_event"]
    if audit_id is not None:
        return (t.c.audit_id == audit_id,)
    assert user is not None
    return (t.c.user_id == user[0], t.c.issued_before == user[1], t.c.audit_id.is_(None))


def _find(
    conn: Connection,
    schema: KeystoneSchema,
    audit_id: str | None,
    user: tuple[str, datetime] | None,
) -> list[Record]:
    t = schema.tables["revocation_event"]
    query = select(t).where(*_where(schema, audit_id, user)).order_by(t.c.id)
    spec = schema.specs["revocation_event"]
    return [json_row(spec, r) for r in conn.execute(query).mappings()]


def _missing(ref: str) -> RecordError:
    return RecordError(404, f"Token revocation event with id {ref} doesn't exist.")


def list_events(conn: Connection, schema: KeystoneSchema) -> list[Record]:
    """Every event, oldest first, each wrapped as ``{"revocation_event": ...}``."""
    t = schema.tables["revocation_event"]
    spec = schema.specs["revocation_event"]
    rows = conn.execute(select(t).order_by(t.c.id)).mappings()
    return [{WRAPPER: json_row(spec, r)} for r in rows]


def get_event(
    conn: Connection,
    schema: KeystoneSchema,
    ref: str,
    audit_id: str | None,
    user: tuple[str, datetime] | None,
) -> Record:
    """The event with that audit id, or that user's event of that ``issued_before`` (404)."""
    found = _find(conn, schema, audit_id, user)
    if not found:
        raise _missing(ref)
    return {WRAPPER: found[0]}


def create_event(conn: Connection, schema: KeystoneSchema, event: Record) -> Record:
    """Store a copy of another cloud's event under this database's own autoincrement id."""
    spec = schema.specs["revocation_event"]
    values = db_values(spec, event)
    audit_id = event.get("audit_id") or None
    user = None if audit_id else (str(event["user_id"]), values["issued_before"])
    if _find(conn, schema, audit_id, user):
        raise RecordError(409, "Unable to create revocation event: it already exists")
    t = schema.tables["revocation_event"]
    key = conn.execute(insert(t).values(values)).inserted_primary_key
    assert key is not None
    row = conn.execute(select(t).where(t.c.id == key[0])).mappings().one()
    return {WRAPPER: json_row(spec, row)}


def delete_event(
    conn: Connection,
    schema: KeystoneSchema,
    ref: str,
    audit_id: str | None,
    user: tuple[str, datetime] | None,
) -> None:
    """Remove the addressed event (404 when there is none)."""
    t = schema.tables["revocation_event"]
    if not conn.execute(delete(t).where(*_where(schema, audit_id, user))).rowcount:
        raise _missing(ref)
