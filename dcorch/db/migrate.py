"""Schema migrations (alembic, driven from code) and the start-up schema check.

No ``alembic.ini``: :func:`alembic_config` points alembic at ``dcorch/db/migrations`` and hands
``env.py`` an open connection through ``config.attributes``. Alembic is synchronous, so SQLite
migrates through a plain sync engine (pysqlite) on the same file, and PostgreSQL (psycopg is not
a dependency) through the asyncpg ``AsyncEngine`` with ``run_sync`` in a private ``asyncio.run``.

The plain functions (:func:`upgrade`, :func:`current_revision`, :func:`ensure_current`) serve the
CLI and scripts, never a running loop; Trio code uses :func:`upgrade_async` (a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from dcorch.db.engine import is_sqlite
from dcorch.db.errors import SchemaOutOfDate

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic ``Config`` for our scripts, optionally bound to an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migration scripts"
    return head


def revision_of(conn: Connection) -> str | None:
    """The revision stamped in the database behind ``conn`` (None for an empty database)."""
    return MigrationContext.configure(conn).get_current_revision()


def _with_connection(url: str, fn: Callable[[Connection], T]) -> T:
    """Run ``fn(conn)`` in one transaction on a short-lived engine for ``url``."""
    if is_sqlite(url):
        sync_url = make_url(url).set(drivername="sqlite")
        database = sync_url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sync_url)
        try:
            with engine.begin() as conn:
                return fn(conn)
        finally:
            engine.dispose()

    async def main() -> T:
        async with contextlib.AsyncExitStack() as stack:
            aengine = create_async_engine(url)
            stack.push_async_callback(aengine.dispose)
            async with aengine.begin() as aconn:
                return await aconn.run_sync(fn)

    return asyncio.run(main())


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (``dcorch db upgrade``)."""

    def run(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), revision)

    _with_connection(url, run)


def current_revision(url: str) -> str | None:
    """The revision of the database at ``url`` (None when no migration has run)."""
    return _with_connection(url, revision_of)


def check_revision(current: str | None) -> None:
    """Raise :class:`SchemaOutOfDate` unless ``current`` is the code's head."""
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(current, head)


def ensure_current(url: str) -> None:
    """Refuse an empty or outdated database (the service calls this before starting)."""
    check_revision(current_revision(url))


async def upgrade_async(url: str, revision: str = "head") -> None:
    """:func:`upgrade` for Trio code (runs in a worker thread)."""
    await trio.to_thread.run_sync(upgrade, url, revision)
