"""Fixtures running the whole tests/db suite against SQLite and PostgreSQL.

SQLite runs always, on a file under ``tmp_path`` copied from a template migrated once per session.
PostgreSQL runs when the server at 127.0.0.1:5432 answers: the session creates its own database
``dcorch_test_<random>`` (and drops it at the end); each test starts from truncated tables.
Unreachable PostgreSQL skips the ``postgres`` params with the reason.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from dcorch import constants as c
from dcorch.db import Database, migrate, open_database
from dcorch.settings import DatabaseSettings

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
TABLES = (
    "subcloud",
    "subcloud_sync",
    "resource",
    "subcloud_resource",
    "orch_job",
    "orch_request",
    "service",
)
FAST = DatabaseSettings(retry_backoff=0.01, retry_backoff_max=0.2, sqlite_busy_timeout_ms=2000)
"""Test tunables: quick retries so the retry tests stay short."""


def pg_url(dbname: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{dbname}"


def _pg(sql: str, dsn: str = PG_ADMIN_DSN) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(main())


class PgServer:
    """Creates and drops the session's PostgreSQL databases."""

    def __init__(self) -> None:
        self.prefix = f"dcorch_test_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def create(self, suffix: str = "") -> str:
        name = f"{self.prefix}{suffix}"
        _pg(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return pg_url(name)

    def drop_all(self) -> None:
        for name in self.created:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | str]:
    """The session's PostgreSQL helper, or the reason it is unavailable."""
    try:
        _pg("SELECT 1")
    except Exception as exc:  # any failure to reach the server means: skip
        yield f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {exc}"
        return
    server = PgServer()
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session")
def pg_session_url(pg_server: PgServer | str) -> str:
    """The migrated database shared by the PostgreSQL tests of this session."""
    if isinstance(pg_server, str):
        pytest.skip(pg_server)
    url = pg_server.create()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "dcorch.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the current backend."""
    name = "sqlite_url" if backend == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database (for tests of SQLite-only behaviour)."""
    path = tmp_path / "dcorch.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def postgres_url(pg_session_url: str) -> str:
    """The migrated PostgreSQL database, emptied (for PostgreSQL-only behaviour)."""
    dsn = pg_session_url.replace("postgresql+asyncpg", "postgresql")
    _pg(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE", dsn)
    return pg_session_url


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all, of the current backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    server = request.getfixturevalue("pg_server")
    if isinstance(server, str):
        pytest.skip(server)
    return str(server.create(f"_{uuid.uuid4().hex[:6]}"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with open_database(db_url, database=FAST) as database:
        yield database


async def make_eligible(db: Database, *regions: str) -> None:
    """Add subclouds and bring them to managed + online + initial sync completed."""
    for region in regions:
        await db.add_subcloud(region, software_version="24.09", management_ip="10.0.0.1")
        await db.update_subcloud_states(
            region,
            management_state=c.MANAGEMENT_MANAGED,
            availability_status=c.AVAILABILITY_ONLINE,
        )
        assert await db.set_initial_sync_state(
            region, c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_COMPLETED
        )
