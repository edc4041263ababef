"""Units of work over keystone's identity objects: users, groups, projects, roles.

Each public function is one unit (``fn(conn, schema, ...)``, SQLAlchemy Core, run in one
transaction by the database runner: ``docs/database.md#units-of-work``); it returns plain
records in the contract's JSON form or raises :class:`RecordError`. Records
(``docs/dbsync.md#records``):

* user: ``user`` row, its ``local_user`` row, its ``password`` rows (oldest first) and its
  ``user_option`` rows; only users with a local_user row are listed (as upstream);
* group: ``group`` row and ``local_user_ids``, the sorted ids of its member users;
* project (domains too: a domain is a project with ``is_domain``): ``project`` row;
* role: ``role`` row.

Creates keep the given ids and hashes; per-cloud autoincrement ids (local_user, password) are
the database's. A replace makes the object ``<id>`` become the given record, id included
(:mod:`dcorch.dbsync.rekey`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update

from dcorch.dbsync.contract import (
    GROUP_MEMBERS,
    KIND_TABLES,
    NULL_DOMAIN,
    Record,
    RecordError,
    TableSpec,
    complete_record,
    json_value,
    merge_record,
    parse_date,
    parse_datetime,
)
from dcorch.dbsync.rekey import rekey
from dcorch.dbsync.schema import KeystoneSchema

# -- conversions ---------------------------------------------------------------------------------


def json_row(spec: TableSpec, row: Any) -> Record:
    """A database row as a contract record (datetimes as canonical text, booleans as bool)."""
    out: Record = {}
    for name, column in spec.columns.items():
        value = row[name]
        if column.kind == "bool" and value is not None:
            value = bool(value)
        out[name] = json_value(value)
    return out


def db_values(spec: TableSpec, row: Record) -> dict[str, Any]:
    """A checked contract row as driver values (datetime text parsed)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        kind = spec.columns[name].kind
        if value is not None and kind == "datetime":
            value = parse_datetime(value)
        elif value is not None and kind == "date":
            value = parse_date(value)
        out[name] = value
    return out


def _rows(conn: Connection, schema: KeystoneSchema, name: str, *where: Any) -> list[Record]:
    table = schema.tables[name]
    query = select(table).where(*where)
    if "id" in table.c:
        query = query.order_by(table.c.id)
    spec = schema.specs[name]
    return [json_row(spec, r) for r in conn.execute(query).mappings()]


def _one(conn: Connection, schema: KeystoneSchema, name: str, oid: str) -> Record | None:
    rows = _rows(conn, schema, name, schema.tables[name].c.id == oid)
    return rows[0] if rows else None


def _not_found(kind: str, oid: str) -> RecordError:
    return RecordError(404, f"{KIND_TABLES[kind].capitalize()} not found: {oid}")


def _insert(conn: Connection, schema: KeystoneSchema, name: str, rows: list[Record]) -> None:
    if rows:
        spec = schema.specs[name]
        conn.execute(insert(schema.tables[name]), [db_values(spec, r) for r in rows])


# -- reads ---------------------------------------------------------------------------------------


def list_records(conn: Connection, schema: KeystoneSchema, kind: str) -> list[Record]:
    """Every record of a kind, in id order."""
    if kind == "users":
        return _users(conn, schema, None)
    if kind == "groups":
        return _groups(conn, schema, None)
    table = KIND_TABLES[kind]
    return [{table: row} for row in _rows(conn, schema, table)]


def get_record(conn: Connection, schema: KeystoneSchema, kind: str, oid: str) -> Record:
    """One record by id (404 when absent)."""
    if kind == "users":
        found = _users(conn, schema, oid)
    elif kind == "groups":
        found = _groups(conn, schema, oid)
    else:
        table = KIND_TABLES[kind]
        found = [
            {table: row} for row in _rows(conn, schema, table, schema.tables[table].c.id == oid)
        ]
    if not found:
        raise _not_found(kind, oid)
    return found[0]


def _users(conn: Connection, schema: KeystoneSchema, oid: str | None) -> list[Record]:
    """User records (all, or the one with id ``oid``): four SELECTs, joined here."""
    t = schema.tables

    def only(column: Any) -> tuple[Any, ...]:
        return (column == oid,) if oid is not None else ()

    users = {u["id"]: u for u in _rows(conn, schema, "user", *only(t["user"].c.id))}
    locals_ = _rows(conn, schema, "local_user", *only(t["local_user"].c.user_id))
    if oid is None:
        passwords_all = _rows(conn, schema, "password")
    else:
        ids = [lu["id"] for lu in locals_]
        passwords_all = _rows(conn, schema, "password", t["password"].c.local_user_id.in_(ids))
    passwords: dict[Any, list[Record]] = defaultdict(list)
    for p in sorted(passwords_all, key=lambda p: (p.get("created_at_int") or 0, p["id"])):
        passwords[p["local_user_id"]].append(p)
    options: dict[str, list[Record]] = defaultdict(list)
    option_rows = _rows(conn, schema, "user_option", *only(t["user_option"].c.user_id))
    for o in sorted(option_rows, key=lambda o: str(o["option_id"])):
        options[o["user_id"]].append(o)
    records = []
    for local in sorted(locals_, key=lambda lu: str(lu["user_id"])):
        user = users.get(local["user_id"])
        if user is None:
            continue
        records.append(
            {
                "user": user,
                "local_user": local,
                "password": passwords.get(local["id"], []),
                "user_option": options.get(user["id"], []),
            }
        )
    return records


def _groups(conn: Connection, schema: KeystoneSchema, oid: str | None) -> list[Record]:
    """Group records (all, or the one with id ``oid``) with their sorted member user ids."""
    t = schema.tables
    where = (t["group"].c.id == oid,) if oid is not None else ()
    groups = _rows(conn, schema, "group", *where)
    membership = t["user_group_membership"]
    query = select(membership.c.group_id, membership.c.user_id)
    if oid is not None:
        query = query.where(membership.c.group_id == oid)
    members: dict[str, list[str]] = defaultdict(list)
    for group_id, user_id in conn.execute(query):
        members[group_id].append(user_id)
    return [{"group": g, GROUP_MEMBERS: sorted(members.get(g["id"], []))} for g in groups]


# -- checks --------------------------------------------------------------------------------------


def _exists(conn: Connection, table: Table, oid: str) -> bool:
    return conn.execute(select(table.c.id).where(table.c.id == oid)).first() is not None


def _domains(conn: Connection, schema: KeystoneSchema, ids: set[str]) -> set[str]:
    project = schema.tables["project"]
    query = select(project.c.id).where(project.c.id.in_(sorted(ids)), project.c.is_domain)
    return {row[0] for row in conn.execute(query)}


def check_references(conn: Connection, schema: KeystoneSchema, kind: str, rec: Record) -> None:
    """400 when the record names a domain, parent project or member user that does not exist."""
    table = KIND_TABLES[kind]
    body = rec[table]
    domain = body.get("domain_id")
    global_role = kind == "roles" and domain == NULL_DOMAIN
    if not global_role and isinstance(domain, str) and not _domains(conn, schema, {domain}):
        raise RecordError(400, f"{table}.domain_id {domain} is not a domain")
    if kind == "projects" and body.get("parent_id") is not None:
        parent = body["parent_id"]
        if parent != body.get("id") and not _exists(conn, schema.tables["project"], parent):
            raise RecordError(400, f"project.parent_id {parent} does not exist")
    if kind == "groups":
        users = schema.tables["user"]
        wanted = set(rec[GROUP_MEMBERS])
        known = {
            r[0] for r in conn.execute(select(users.c.id).where(users.c.id.in_(sorted(wanted))))
        }
        missing = sorted(wanted - known)
        if missing:
            raise RecordError(400, f"{GROUP_MEMBERS} names unknown users: {', '.join(missing)}")


# -- writes --------------------------------------------------------------------------------------


def create_record(conn: Connection, schema: KeystoneSchema, kind: str, rec: Record) -> Record:
    """Insert a record under its own id; 409 when that id (or its name) is taken."""
    rec = complete_record(kind, rec, schema.specs)
    table = KIND_TABLES[kind]
    oid = rec[table]["id"]
    check_references(conn, schema, kind, rec)
    if _exists(conn, schema.tables[table], oid):
        raise RecordError(409, f"Unable to create {table}: {oid} already exists")
    _insert(conn, schema, table, [rec[table]])
    _write_dependants(conn, schema, kind, oid, rec, lists=set(LIST_SECTIONS), created=True)
    return get_record(conn, schema, kind, oid)


def replace_record(
    conn: Connection, schema: KeystoneSchema, kind: str, oid: str, given: Record
) -> Record:
    """Make object ``oid`` the given record (merged over the old one), whose id may differ."""
    old = get_record(conn, schema, kind, oid)
    rec = complete_record(kind, merge_record(kind, old, given), schema.specs)
    table = KIND_TABLES[kind]
    new_id = rec[table]["id"]
    check_references(conn, schema, kind, rec)
    t = schema.tables[table]
    if new_id != oid:
        if _exists(conn, t, new_id):
            raise RecordError(409, f"Unable to update {table}: {new_id} already exists")
        rekey(conn, schema, table, oid, new_id)
    values = {k: v for k, v in rec[table].items() if k != "id"}
    if values:
        spec = schema.specs[table]
        conn.execute(update(t).where(t.c.id == new_id).values(db_values(spec, values)))
    _write_dependants(conn, schema, kind, new_id, rec, lists=set(given) & set(LIST_SECTIONS))
    return get_record(conn, schema, kind, new_id)


LIST_SECTIONS = ("password", "user_option", GROUP_MEMBERS)
"""Record sections that are lists of rows: a replace rewrites those it carries, keeps the rest."""


def _write_dependants(
    conn: Connection,
    schema: KeystoneSchema,
    kind: str,
    oid: str,
    rec: Record,
    *,
    lists: set[str],
    created: bool = False,
) -> None:
    """The rows that hang off the object: a user's local_user, passwords and options, a
    group's memberships (created, or rewritten for the list sections in ``lists``)."""
    t = schema.tables
    if kind == "users":
        lu = t["local_user"]
        local = {k: v for k, v in rec["local_user"].items() if k not in ("id", "user_id")}
        spec = schema.specs["local_user"]
        if created:
            values = db_values(spec, {**local, "user_id": oid})
            key = conn.execute(insert(lu).values(values)).inserted_primary_key
            assert key is not None
            local_id = key[0]
        else:
            if local:
                conn.execute(update(lu).where(lu.c.user_id == oid).values(db_values(spec, local)))
            local_id = conn.execute(select(lu.c.id).where(lu.c.user_id == oid)).scalar_one()
        if "password" in lists:
            pw = t["password"]
            if not created:
                conn.execute(delete(pw).where(pw.c.local_user_id == local_id))
            rows = [{**p, "local_user_id": local_id} for p in rec.get("password") or []]
            _insert(conn, schema, "password", rows)
        if "user_option" in lists:
            opt = t["user_option"]
            if not created:
                conn.execute(delete(opt).where(opt.c.user_id == oid))
            rows = [{**o, "user_id": oid} for o in rec.get("user_option") or []]
            _insert(conn, schema, "user_option", rows)
    elif kind == "groups" and GROUP_MEMBERS in lists:
        membership = t["user_group_membership"]
        if not created:
            conn.execute(delete(membership).where(membership.c.group_id == oid))
        rows = [{"user_id": u, "group_id": oid} for u in rec[GROUP_MEMBERS]]
        if rows:
            conn.execute(insert(membership), rows)


def consistent_read(conn: Connection, fn: Any, *args: Any) -> Any:
    """Run the read ``fn(conn, *args)`` on one snapshot.

    A record takes several SELECTs; PostgreSQL's default READ COMMITTED would let a replace
    committed between them mix old and new rows, REPEATABLE READ gives them all one snapshot
    (SQLite's read transaction already is one).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return fn(conn, *args)
