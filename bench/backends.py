"""Fresh, migrated databases for each scenario: a SQLite file or a throwaway PostgreSQL database.

Every scenario gets its own database so a previous scenario's rows (and, on PostgreSQL, its dead
tuples) cannot change the table sizes it measures. PostgreSQL databases are uniquely named per
run and dropped afterwards, even when the scenario fails.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dcorch.db import migrate

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Backend:
    """Where one scenario's database lives, in the forms each measured client needs."""

    name: str
    """``sqlite`` or ``postgresql``."""
    url: str
    """dcorch's async URL (``sqlite+aiosqlite`` / ``postgresql+asyncpg``)."""
    sync_url: str
    """The real system's sync ORM driver (pysqlite / psycopg 3)."""
    raw: str
    """SQLite file path, or an asyncpg DSN."""


def _pg_dsn(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _pg_admin(sql: str) -> str:
    async def run() -> str:
        conn = await asyncpg.connect(_pg_dsn("postgres"), timeout=3)
        try:
            return str(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def postgres_version() -> tuple[str | None, str]:
    """``(version, "")`` when PostgreSQL answers, else ``(None, reason it is skipped)``."""
    try:
        return _pg_admin("SHOW server_version"), ""
    except Exception as exc:  # any failure to connect means: skip PostgreSQL, say why
        return None, f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {exc!r}"


@contextmanager
def fresh_backend(name: str) -> Iterator[Backend]:
    """A migrated, empty database of backend ``name``; removed on exit."""
    if name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dcorch-bench-") as tmp:
            path = str(Path(tmp) / "bench.db")
            backend = Backend(name, f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}", path)
            migrate.upgrade(backend.url)
            yield backend
        return
    if name != "postgresql":
        raise ValueError(f"unknown backend {name!r}")
    database = f"dcorch_bench_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{database}"')
    try:
        base = f"{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
        backend = Backend(
            name,
            f"postgresql+asyncpg://{base}",
            f"postgresql+psycopg://{base}",
            _pg_dsn(database),
        )
        migrate.upgrade(backend.url)
        yield backend
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
