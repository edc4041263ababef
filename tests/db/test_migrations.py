"""Migrations: empty database, upgrade from the previous revision, schema = metadata, refusal."""

from __future__ import annotations

import pytest
import trio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from dcorch.db import SchemaOutOfDate, migrate, open_database
from dcorch.db.schema import metadata
from tests.db.conftest import FAST


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn)
    return list(compare_metadata(ctx, metadata))


def _indexes(conn: Connection, table: str) -> set[str]:
    return {ix["name"] for ix in inspect(conn).get_indexes(table) if ix["name"]}


async def test_upgrade_empty_database_to_head(empty_url: str) -> None:
    assert await trio.to_thread.run_sync(migrate.current_revision, empty_url) is None
    await migrate.upgrade_async(empty_url)
    assert (
        await trio.to_thread.run_sync(migrate.current_revision, empty_url)
        == migrate.head_revision()
        == "0002"
    )
    # The migrated schema is exactly what the code's metadata describes.
    assert migrate._with_connection(empty_url, _diff) == []


async def test_upgrade_from_previous_revision(empty_url: str) -> None:
    await migrate.upgrade_async(empty_url, "0001")
    assert await trio.to_thread.run_sync(migrate.current_revision, empty_url) == "0001"
    before = migrate._with_connection(empty_url, lambda c: _indexes(c, "orch_request"))
    assert "orch_request_pending_idx" not in before
    await migrate.upgrade_async(empty_url)
    after = migrate._with_connection(empty_url, lambda c: _indexes(c, "orch_request"))
    assert "orch_request_pending_idx" in after
    assert migrate._with_connection(empty_url, _diff) == []
    await trio.to_thread.run_sync(migrate.ensure_current, empty_url)


async def test_ensure_current_refuses_empty_database(empty_url: str) -> None:
    with pytest.raises(SchemaOutOfDate) as info:
        await trio.to_thread.run_sync(migrate.ensure_current, empty_url)
    assert str(info.value) == (
        "database at revision none (empty database), code needs 0002: run `dcorch db upgrade`"
    )


async def test_open_database_refuses_old_revision(empty_url: str) -> None:
    await migrate.upgrade_async(empty_url, "0001")
    with pytest.raises(SchemaOutOfDate, match=r"^database at revision 0001, code needs 0002: run "):
        async with open_database(empty_url, database=FAST):
            pass  # pragma: no cover - must not be reached
    # Migration tooling may still open it.
    async with open_database(empty_url, database=FAST, check_schema=False) as db:
        assert db.backend in {"sqlite", "postgresql"}


def test_sync_api_for_the_cli(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sub/dir/dcorch.db"
    migrate.upgrade(url)  # creates the data directory too
    migrate.ensure_current(url)
    assert migrate.current_revision(url) == migrate.head_revision()
