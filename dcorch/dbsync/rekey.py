"""Give a keystone object a new id, taking along every row that refers to it.

A replace over ``/<subcloud id>`` makes the subcloud's object *be* the master's, id included
(``docs/dbsync.md#create-and-replace``). Keystone's foreign keys are not declared
``ON UPDATE CASCADE`` (memberships, options, implied roles, assignments' role) and some links
have no key at all (assignments' actor and target, a user's default project), so updating the
id in place would violate them, and deleting the dependants first (upstream's way) loses the
ones whose keys cascade on delete (a project's tags and options). Instead, inside the caller's
transaction:

1. insert a copy of the row under the new id, with a placeholder in each unique column other
   than the id (a name), so the copy does not collide with the original;
2. point every referring column (:attr:`KeystoneSchema.references`) at the copy;
3. delete the original, which nothing refers to any more.

The caller then writes the record's own values (the real name) over the copy. Every step is a
plain statement on both SQLite (foreign keys on) and PostgreSQL; a failure anywhere rolls the
whole unit back.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, delete, insert, select, update

from dcorch.dbsync.schema import KeystoneSchema


def rekey(conn: Connection, schema: KeystoneSchema, table_name: str, old: str, new: str) -> int:
    """Move object ``old`` of ``table_name`` to id ``new``; returns the referring rows moved."""
    table = schema.tables[table_name]
    row = conn.execute(select(table).where(table.c.id == old)).mappings().one()
    copy = dict(row)
    copy["id"] = new
    for column in schema.unique_names[table_name]:
        length = getattr(table.c[column].type, "length", None) or 32
        copy[column] = uuid.uuid4().hex[: min(32, length)]
    conn.execute(insert(table), [copy])
    moved = 0
    for ref in schema.references[table_name]:
        holder = ref.table.c[ref.column]
        statement = update(ref.table).where(holder == old).values({ref.column: new})
        if ref.table is table:
            statement = statement.where(table.c.id != new)
        if ref.only_types:
            statement = statement.where(ref.table.c.type.in_(ref.only_types))
        moved += conn.execute(statement).rowcount or 0
    conn.execute(delete(table).where(table.c.id == old))
    return moved
