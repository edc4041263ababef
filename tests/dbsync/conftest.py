"""Real keystones for the DB-sync agent's tests, and the agent started in-process beside them.

Two keystones are started once per session: ``subcloud``, with its cache off because the agent
writes its database behind its back, and ``master``, whose database the agent only reads (tests
write it through keystone's API alone), with its cache on (a call takes milliseconds instead of
about a second here). Each test starts its own agents on ephemeral ports and uses fresh names
and ids, so tests do not see each other's objects.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import trio

from dcorch.db.database import NO_SEAMS, DatabaseSeams
from dcorch.dbsync.agent import DbsyncAgent, open_dbsync_agent
from dcorch.settings import Settings
from tests.realkeystone.conftest import KeystoneFactory
from tests.realkeystone.keystone import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    REGION,
    WSGI_SHIM,
    KeystoneInstance,
    keystone_manage,
    make_key_repositories,
    render_keystone_conf,
    start_in_parallel,
)


@pytest.fixture(scope="session")
def keystones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KeystoneInstance]]:
    """Two running keystones, ``master`` and ``subcloud``, each with its own database."""
    factory = KeystoneFactory(tmp_path_factory)
    try:
        chosen = [factory.create("master", cache=True), factory.create("subcloud")]
        yield {k.name: k for k in start_in_parallel(chosen)}
    finally:
        factory.stop_all()


def new_name(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def agent_settings(keystone: KeystoneInstance, database_url: str | None = None) -> Settings:
    """``[dbsync]`` for an agent beside ``keystone`` (its database unless another is named)."""
    return Settings().replace(
        dbsync={
            "keystone_database_url": database_url or keystone.db_url,
            "keystone_url": keystone.url,
        }
    )


@asynccontextmanager
async def running_agent(
    keystone: KeystoneInstance,
    *,
    database_url: str | None = None,
    seams: DatabaseSeams = NO_SEAMS,
) -> AsyncIterator[DbsyncAgent]:
    """The agent beside ``keystone``, in this test's event loop, on a free port."""
    settings = agent_settings(keystone, database_url)
    async with open_dbsync_agent(settings, port=0, seams=seams) as agent:
        yield agent


@dataclass
class Peer:
    """One keystone and the agent beside it, driven over HTTP (the agent's real interface)."""

    keystone: KeystoneInstance
    agent: DbsyncAgent
    http: httpx.AsyncClient
    token: str

    @property
    def dbsync(self) -> str:
        return f"{self.agent.url}/v1.0/identity"

    async def db(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the agent with this keystone's admin token."""
        headers = {"X-Auth-Token": self.token, **kwargs.pop("headers", {})}
        return await self.http.request(method, f"{self.dbsync}/{path}", headers=headers, **kwargs)

    async def ks(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the keystone's own v3 API with its admin token."""
        headers = {"X-Auth-Token": self.token, **kwargs.pop("headers", {})}
        url = f"{self.keystone.auth_url}/{path}"
        return await self.http.request(method, url, headers=headers, **kwargs)


async def keystone_token(
    http: httpx.AsyncClient,
    auth_url: str,
    user: str,
    password: str,
    project: str | None = "admin",
) -> httpx.Response:
    """``POST /v3/auth/tokens`` with a password (the answer, so tests can see a refusal)."""
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return await http.post(f"{auth_url}/auth/tokens", json={"auth": auth})


async def admin_token(
    http: httpx.AsyncClient, auth_url: str, password: str = ADMIN_PASSWORD
) -> str:
    response = await keystone_token(http, auth_url, ADMIN_USER, password)
    assert response.status_code == 201, response.text
    return response.headers["X-Subject-Token"]


@asynccontextmanager
async def open_peer(keystone: KeystoneInstance, **agent_kwargs: Any) -> AsyncIterator[Peer]:
    async with httpx.AsyncClient(timeout=60) as http:
        token = await admin_token(http, keystone.auth_url)
        async with running_agent(keystone, **agent_kwargs) as agent:
            yield Peer(keystone, agent, http, token)


async def wait_a_second() -> None:
    """keystone rejects tokens issued in the second of a revocation event (real-keystone notes)."""
    await trio.sleep(1.1)


# -- PostgreSQL -----------------------------------------------------------------------------------

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg(sql: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(main())


@dataclass
class PgKeystone:
    """A real keystone whose database is PostgreSQL, migrated by keystone-manage itself."""

    keystone: KeystoneInstance
    database_url: str
    """As keystone.conf names it (``postgresql+psycopg2://``); the agent maps it to asyncpg."""


@pytest.fixture(scope="session")
def pg_keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgKeystone]:
    """keystone-manage db_sync + bootstrap into a fresh PostgreSQL database, then gunicorn."""
    try:
        _pg("SELECT 1")
    except Exception as exc:  # any failure to reach the server means: skip
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}")
    name = f"dcorch_keystone_{uuid.uuid4().hex[:10]}"
    _pg(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    instance = KeystoneInstance(tmp_path_factory.mktemp("pg-keystone"), name="postgres")
    try:
        instance.root.mkdir(parents=True, exist_ok=True)
        instance.config_file.write_text(
            render_keystone_conf(
                url, instance.fernet_keys, instance.credential_keys, log_file=instance.log_file
            )
        )
        make_key_repositories(instance.fernet_keys, instance.credential_keys)
        (instance.root / "keystone_wsgi.py").write_text(WSGI_SHIM)
        keystone_manage(instance.config_file, "db_sync")
        keystone_manage(
            instance.config_file,
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-region-id",
            REGION,
            "--bootstrap-public-url",
            instance.auth_url,
        )
        instance.start()  # prepare() keeps the layout above: the config exists
        yield PgKeystone(instance, url)
    finally:
        instance.stop()
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
