"""Start the DB-sync agent: the keystone database, the token check and the HTTP server.

Usage (tests start it in-process on an ephemeral port, ``dcorch dbsync`` in the foreground)::

    async with open_dbsync_agent(settings, port=0) as agent:
        httpx.get(f"{agent.url}/v1.0/identity/users/", headers={"X-Auth-Token": admin_token})

Everything runs on the project's one set of parts: :func:`dcorch.db.open_database` over the
keystone URL (schema check off: the schema is keystone's, reflected at start-up),
:func:`dcorch.remote.http.open_http_client` for the calls to keystone, the proxy's
:class:`~dcorch.proxy.auth.TokenCache` and :func:`dcorch.asgi.serve_asgi`.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dcorch.asgi import serve_asgi
from dcorch.db import open_database
from dcorch.db.database import NO_SEAMS, DatabaseSeams
from dcorch.db.errors import DatabaseError
from dcorch.dbsync.app import create_dbsync_app
from dcorch.dbsync.schema import NotAKeystoneDatabase, reflect_keystone
from dcorch.dbsync.store import KeystoneStore
from dcorch.proxy.auth import KeystoneTokenValidator, TokenCache
from dcorch.remote.http import open_http_client
from dcorch.settings import Settings

logger = logging.getLogger(__name__)

ASYNC_DRIVERS: Final = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "aiomysql"}
"""The asyncio driver the agent uses per backend (MySQL needs ``pip install aiomysql``)."""
KEEPS_DRIVER: Final = {"sqlite+aiosqlite", "postgresql+asyncpg", "mysql+aiomysql", "mysql+asyncmy"}
TOKEN_CHECK_CONNECTIONS: Final = 8


class AgentConfigError(ValueError):
    """The ``[dbsync]`` settings cannot start an agent (the message names the key)."""


def async_database_url(url: str) -> str:
    """keystone.conf's ``[database] connection`` as the URL of its asyncio driver.

    ``sqlite:///k.db`` -> ``sqlite+aiosqlite:///k.db``, ``postgresql[+psycopg2]://...`` ->
    ``postgresql+asyncpg://...``, ``mysql[+pymysql]://...`` -> ``mysql+aiomysql://...``.

    Raises:
        AgentConfigError: empty, unparsable, or a backend without an asyncio driver.
    """
    if not url:
        raise AgentConfigError("dbsync.keystone_database_url is not set")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise AgentConfigError(
            f"dbsync.keystone_database_url is not a database URL: {url!r}"
        ) from None
    if parsed.drivername in KEEPS_DRIVER:
        return url
    backend = "mysql" if parsed.get_backend_name() == "mariadb" else parsed.get_backend_name()
    driver = ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise AgentConfigError(f"dbsync.keystone_database_url: unsupported backend {backend!r}")
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def keystone_root(url: str) -> str:
    """The unversioned keystone URL the token check calls ``/v3/auth/tokens`` under."""
    if not url:
        raise AgentConfigError("dbsync.keystone_url is not set (it validates callers' tokens)")
    root = url.rstrip("/")
    return root.removesuffix("/v3")


@dataclass(frozen=True, slots=True)
class DbsyncAgent:
    """A running agent."""

    url: str
    """Where it listens (``http://host:port``); its API is under ``/v1.0``."""
    store: KeystoneStore


@asynccontextmanager
async def open_dbsync_agent(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    seams: DatabaseSeams = NO_SEAMS,
) -> AsyncIterator[DbsyncAgent]:
    """Run the agent of ``settings.dbsync`` until the block exits.

    Args:
        host, port: override ``dbsync.host`` / ``dbsync.port`` (``port=0``: a free port).
        seams: database fault injection for tests (as :func:`dcorch.db.open_database`).

    Raises:
        AgentConfigError: bad ``[dbsync]`` settings. NotAKeystoneDatabase: the database is not
        a migrated keystone one.
    """
    dbsync = settings.dbsync
    url = async_database_url(dbsync.keystone_database_url)
    keystone = keystone_root(dbsync.keystone_url)
    async with open_database(
        url, database=settings.database, check_schema=False, seams=seams
    ) as db:
        schema = await db.run_readonly(reflect_keystone)
        store = KeystoneStore(db, schema)
        client = open_http_client(
            settings.tls,
            max_connections=TOKEN_CHECK_CONNECTIONS,
            timeout=settings.proxy.forward_timeout,
        )
        async with client:
            tokens = TokenCache(
                KeystoneTokenValidator(keystone, client), ttl=dbsync.token_cache_ttl
            )
            app = create_dbsync_app(
                store, tokens, keystone_url=keystone, max_body_bytes=dbsync.max_body_bytes
            )
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(
                    partial(
                        serve_asgi,
                        app,
                        host if host is not None else dbsync.host,
                        dbsync.port if port is None else port,
                        shutdown_trigger=stop.wait,
                    )
                )
                logger.info(
                    "dbsync.started url=%s backend=%s keystone=%s",
                    bound[0],
                    schema.dialect,
                    keystone,
                )
                try:
                    yield DbsyncAgent(url=str(bound[0]), store=store)
                finally:
                    stop.set()


async def _serve(settings: Settings, host: str | None, port: int | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_dbsync_agent(settings, host=host, port=port) as agent:
            print(  # noqa: T201 - the operator's console
                f"dcorch dbsync is running: {agent.url}/v1.0 over the keystone database "
                f"({agent.store.schema.dialect}); tokens checked by {settings.dbsync.keystone_url}"
                "\nCtrl-C stops.",
                flush=True,
            )
            async for signum in signals:
                logger.info("dbsync.stopping signal=%s", signal.Signals(signum).name)
                break


def serve_dbsync(settings: Settings, *, host: str | None = None, port: int | None = None) -> int:
    """``dcorch dbsync``: run until SIGINT/SIGTERM; returns the process exit status."""
    try:
        trio.run(_serve, settings, host, port)
    except Exception as raised:  # start-up errors leave trio's nurseries wrapped in groups
        exc = _leaf(raised)
        if isinstance(exc, AgentConfigError | NotAKeystoneDatabase):
            print(f"dcorch dbsync: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        if isinstance(exc, OSError | DatabaseError):
            print(f"dcorch dbsync: cannot start: {exc}", file=sys.stderr)  # noqa: T201
            return 1
        raise
    return 0


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (else the group itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
