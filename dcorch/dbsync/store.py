"""The agent's face over the keystone database: one method, one transaction.

Bodies are checked against the reflected schema (:mod:`dcorch.dbsync.contract`) before any
database work, then each call is one unit of work on the project's one database layer
(:func:`dcorch.db.open_database`: the asyncio thread, shielded units, retries, the single
writer on SQLite; ``docs/database.md``). A unit that fails rolls back whole, so a call either
stores the entire record or changes nothing (``docs/dbsync.md#transactions``).
"""

from __future__ import annotations

from typing import Any

from dcorch.db import Database, DatabaseUnavailable, IntegrityConflict
from dcorch.db.errors import DatabaseError
from dcorch.dbsync import units_events as ue
from dcorch.dbsync import units_objects as uo
from dcorch.dbsync.contract import (
    KIND_TABLES,
    Record,
    RecordError,
    parse_event,
    parse_record,
    parse_user_event_id,
)
from dcorch.dbsync.schema import KeystoneSchema


class StoreUnavailable(Exception):
    """The keystone database could not be reached (after the runner's retries)."""


class KeystoneStore:
    """Identity records and revocation events of one keystone database."""

    def __init__(self, db: Database, schema: KeystoneSchema) -> None:
        self._db = db
        self.schema = schema

    async def _read(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._db.run_readonly(uo.consistent_read, fn, self.schema, *args)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _write(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._db.run(fn, self.schema, *args)
        except IntegrityConflict as exc:
            raise RecordError(409, f"conflicts with the keystone database: {exc}") from exc
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc
        except DatabaseError as exc:
            raise RecordError(500, f"keystone database error: {exc}") from exc

    # -- identity objects --------------------------------------------------------------------

    async def list_records(self, kind: str) -> list[Record]:
        """``users``, ``groups``, ``projects`` or ``roles``, in id order."""
        records: list[Record] = await self._read(uo.list_records, _known(kind))
        return records

    async def get_record(self, kind: str, oid: str) -> Record:
        record: Record = await self._read(uo.get_record, _known(kind), oid)
        return record

    async def create_record(self, kind: str, body: Any) -> Record:
        """Insert ``body`` with its ids (400 bad input, 409 id or name taken)."""
        rec = parse_record(_known(kind), body, self.schema.specs)
        record: Record = await self._write(uo.create_record, kind, rec)
        return record

    async def replace_record(self, kind: str, oid: str, body: Any) -> Record:
        """Make ``oid`` the given record, id included (400, 404 no ``oid``, 409 taken)."""
        rec = parse_record(_known(kind), body, self.schema.specs)
        record: Record = await self._write(uo.replace_record, kind, oid, rec)
        return record

    # -- revocation events -------------------------------------------------------------------

    async def list_events(self) -> list[Record]:
        events: list[Record] = await self._read(ue.list_events)
        return events

    async def get_event(self, by: str, ref: str) -> Record:
        """By ``audits/<audit_id>`` or ``users/<user event id>``."""
        event: Record = await self._read(ue.get_event, ref, *_address(by, ref))
        return event

    async def create_event(self, body: Any) -> Record:
        event = parse_event(body, self.schema.specs["revocation_event"])
        created: Record = await self._write(ue.create_event, event)
        return created

    async def delete_event(self, by: str, ref: str) -> None:
        await self._write(ue.delete_event, ref, *_address(by, ref))


def _known(kind: str) -> str:
    if kind not in KIND_TABLES:
        raise RecordError(404, f"the resource could not be found: identity/{kind}")
    return kind


def _address(by: str, ref: str) -> tuple[str | None, Any]:
    if by == "audits":
        return ref, None
    return None, parse_user_event_id(ref)
