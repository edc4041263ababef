"""Keystone's schema as the agent finds it: reflected from the database at start-up.

Nothing about keystone's tables is written down here but their names and the few columns the
agent addresses by name; types, nullability, lengths, unique constraints and foreign keys come
from the database itself (SQLAlchemy reflection), so a keystone release that adds a column is
served without a code change, and one that changes what the agent relies on stops it at
start-up with a message instead of corrupting records (``docs/dbsync.md#schema``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Column, Connection, MetaData, Table, UniqueConstraint
from sqlalchemy.sql import sqltypes

from dcorch.dbsync.contract import ColumnKind, ColumnSpec, TableSpec

RECORD_TABLES: Final = (
    "user",
    "local_user",
    "password",
    "user_option",
    "group",
    "project",
    "role",
    "revocation_event",
)
"""Tables whose rows are served as records (validated with a :class:`TableSpec`)."""

REQUIRED_COLUMNS: Final = {
    "user": ("id", "domain_id"),
    "local_user": ("id", "user_id", "domain_id", "name"),
    "password": ("id", "local_user_id"),
    "user_option": ("user_id", "option_id"),
    "group": ("id", "domain_id", "name"),
    "user_group_membership": ("user_id", "group_id"),
    "project": ("id", "domain_id", "parent_id", "is_domain", "name"),
    "role": ("id", "domain_id", "name"),
    "assignment": ("type", "actor_id", "target_id", "role_id"),
    "revocation_event": ("id", "user_id", "audit_id", "issued_before"),
}
"""What the agent's statements name; a database without these is not a keystone it can serve."""

OBJECT_TABLES: Final = ("user", "group", "project", "role")

LOGICAL_REFERENCES: Final[dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]]] = {
    "user": (
        ("assignment", "actor_id", ("UserProject", "UserDomain")),
        ("system_assignment", "actor_id", ("UserSystem",)),
    ),
    "group": (
        ("assignment", "actor_id", ("GroupProject", "GroupDomain")),
        ("system_assignment", "actor_id", ("GroupSystem",)),
    ),
    "project": (
        ("assignment", "target_id", ()),
        ("user", "default_project_id", ()),
        ("user", "domain_id", ()),
        ("group", "domain_id", ()),
        ("role", "domain_id", ()),
    ),
    "role": (("system_assignment", "role_id", ()),),
}
"""Columns holding an object's id without a declared foreign key (keystone keeps assignments
and domain links by convention): ``(table, column, assignment types it is limited to)``. A
user's ``local_user.domain_id`` follows ``user.domain_id`` through its ON UPDATE CASCADE key."""


class NotAKeystoneDatabase(RuntimeError):
    """The database lacks a table or column the agent needs (or has a type it cannot check)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A column elsewhere that holds an object's id (moved when the object's id changes)."""

    table: Table
    column: str
    only_types: tuple[str, ...] = ()
    """Non-empty: only rows whose ``type`` is one of these (assignments of that actor kind)."""


@dataclass(frozen=True, slots=True)
class KeystoneSchema:
    """Reflected tables plus what the agent derived from them."""

    tables: Mapping[str, Table]
    specs: Mapping[str, TableSpec]
    references: Mapping[str, tuple[Reference, ...]]
    """Object table -> every column holding its ids: declared foreign keys, then the logical."""
    unique_names: Mapping[str, tuple[str, ...]]
    """Object table -> columns of its unique constraints that do not include ``id`` (one per
    constraint, ``name`` where it is one): given a placeholder while an id changes."""
    dialect: str


def reflect_keystone(conn: Connection) -> KeystoneSchema:
    """A unit of work: reflect the whole database and check it is a keystone one."""
    metadata = MetaData()
    metadata.reflect(bind=conn)
    tables = dict(metadata.tables)
    missing = [
        f"{name}.{column}" if name in tables else name
        for name, columns in REQUIRED_COLUMNS.items()
        for column in (columns if name in tables else columns[:1])
        if name not in tables or column not in tables[name].c
    ]
    if missing:
        raise NotAKeystoneDatabase(
            f"not a keystone database (missing {', '.join(dict.fromkeys(missing))}); "
            "run `keystone-manage db_sync` on it first"
        )
    return KeystoneSchema(
        tables=tables,
        specs={name: table_spec(tables[name]) for name in RECORD_TABLES},
        references={name: _references(metadata, name) for name in OBJECT_TABLES},
        unique_names={name: _unique_names(tables[name]) for name in OBJECT_TABLES},
        dialect=conn.dialect.name,
    )


def table_spec(table: Table) -> TableSpec:
    """The validation view of one reflected table."""
    auto = table.autoincrement_column
    columns = {}
    for column in table.columns:
        kind, length, bits = _kind(table, column)
        columns[column.name] = ColumnSpec(
            name=column.name,
            kind=kind,
            nullable=bool(column.nullable),
            required=not column.nullable and column.server_default is None and column is not auto,
            max_length=length,
            int_bits=bits,
        )
    return TableSpec(table.name, columns)


def _kind(table: Table, column: Column[object]) -> tuple[ColumnKind, int | None, int]:
    kind = column.type
    if isinstance(kind, sqltypes.Boolean) or _is_mysql_bool(kind):
        return "bool", None, 64
    if isinstance(kind, sqltypes.DateTime):
        return "datetime", None, 64
    if isinstance(kind, sqltypes.Date):
        return "date", None, 64
    if isinstance(kind, sqltypes.Integer):
        return "int", None, 64 if isinstance(kind, sqltypes.BigInteger) else 32
    if isinstance(kind, sqltypes.String):
        return "str", kind.length, 64
    raise NotAKeystoneDatabase(
        f"column {table.name}.{column.name} has type {kind!r}, which the agent cannot validate"
    )


def _is_mysql_bool(kind: object) -> bool:
    """MySQL stores keystone's booleans as TINYINT(1)."""
    return type(kind).__name__ == "TINYINT" and getattr(kind, "display_width", None) == 1


def _references(metadata: MetaData, target: str) -> tuple[Reference, ...]:
    found: dict[tuple[str, str], Reference] = {}
    for table in metadata.tables.values():
        for fk in table.foreign_key_constraints:
            if fk.referred_table.name != target:
                continue
            for element in fk.elements:
                if element.column.name == "id":
                    found[(table.name, element.parent.name)] = Reference(table, element.parent.name)
    for name, column, types in LOGICAL_REFERENCES[target]:
        holder = metadata.tables.get(name)
        if holder is not None and column in holder.c and (name, column) not in found:
            found[(name, column)] = Reference(holder, column, types)
    return tuple(found.values())


def _unique_names(table: Table) -> tuple[str, ...]:
    groups = [
        [c.name for c in constraint.columns]
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    groups += [[c.name for c in index.columns] for index in table.indexes if index.unique]
    chosen: list[str] = []
    for names in groups:
        if "id" in names:
            continue
        strings = [n for n in names if isinstance(table.c[n].type, sqltypes.String)]
        pick = "name" if "name" in names else (strings[0] if strings else None)
        if pick is not None and pick not in chosen:
            chosen.append(pick)
    return tuple(chosen)
