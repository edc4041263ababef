"""Alembic environment for dcorch: online mode only, on a connection handed in by migrate.py."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI directly
    raise RuntimeError("run migrations through dcorch.db.migrate (dcorch db upgrade)")

context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
