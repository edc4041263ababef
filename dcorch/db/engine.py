"""Engine construction and error classification, shared by the actor and the migrations.

The backend is chosen by the URL alone: ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``.
SQLite gets its PRAGMAs on every new connection, and Python's sqlite3 transaction handling is
replaced by an explicit ``BEGIN`` so a writing unit can start with ``BEGIN IMMEDIATE``: taking
the write lock up front means a unit waits (``busy_timeout``) or fails *before* doing any work,
instead of hitting ``SQLITE_BUSY`` when a read transaction tries to upgrade to a write.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dcorch.db.errors import DatabaseError, IntegrityConflict
from dcorch.settings import DatabaseSettings

BEGIN_OPTION = "dcorch_begin"
"""Execution option naming the SQLite ``BEGIN`` flavour (``IMMEDIATE`` for writing units)."""

_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
"""Serialization failure, deadlock, lock not available, admin/crash shutdown, cannot connect now."""

_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_sqlite(url: str | URL) -> bool:
    """True when the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine_for(url: str, settings: DatabaseSettings) -> AsyncEngine:
    """An ``AsyncEngine`` configured for the URL's backend (call on the asyncio thread)."""
    if is_sqlite(url):
        engine = create_async_engine(
            url, pool_size=max(settings.pool_size, 1), max_overflow=settings.max_overflow
        )
        _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
        return engine
    # pre-ping replaces a connection the server dropped (restart, failover) at checkout instead
    # of failing the next unit; errors in flight are retried by the actor.
    return create_async_engine(
        url,
        pool_size=max(settings.pool_size, 1),
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
            "PRAGMA foreign_keys=ON",
        ):
            cur.execute(pragma)
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later attempt of the same unit can succeed past.

    Lost or refused connections, SQLite lock timeouts, PostgreSQL serialization failures, deadlocks,
    server shutdowns; also a connection lost in ``COMMIT``, replaying a unit whose commit may have
    landed: accepted for availability (enqueues make fresh jobs: duplicated work, no corruption).
    """
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        for candidate in (orig, getattr(orig, "__cause__", None)):
            if getattr(candidate, "sqlstate", None) in _TRANSIENT_SQLSTATES:
                return True
            code = getattr(candidate, "sqlstate", None) or ""
            if code.startswith("08"):  # connection exception class
                return True
        text = str(orig).lower()
        if any(t in text for t in _TRANSIENT_SQLITE):
            return True
        return _is_connection_error(orig) or _is_connection_error(getattr(orig, "__cause__", None))
    return _is_connection_error(exc)


def _is_connection_error(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, OSError):  # refused, reset, timed out (TimeoutError is an OSError)
        return True
    name = type(exc).__name__
    if name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "ConnectionFailureError"}:
        return True
    return name == "InterfaceError" and "closed" in str(exc).lower()


def translate(exc: BaseException) -> BaseException:
    """Map a driver/SQLAlchemy exception to the typed errors callers handle."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, IntegrityError):
        return IntegrityConflict(str(exc.orig).splitlines()[0] if exc.orig else str(exc))
    if isinstance(exc, SQLAlchemyError):
        return DatabaseError(str(exc).splitlines()[0])
    return exc
