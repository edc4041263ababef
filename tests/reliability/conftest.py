"""Shared pieces of the reliability suite: databases, the service as a subprocess, DB probes.

Everything talks real HTTP. The crash tests run ``dcorch serve`` as a child process so that
``kill -9`` is a real crash; the other tests run the embedded harness in-process (the bad-input
tests in a thread of its own, :mod:`bench.fuzz.system`, as hypothesis drives synchronous code).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from dcorch.db import migrate
from dcorch.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_PROJECT = "admin"
REGIONS_3 = ("subcloud1", "subcloud2", "subcloud3")


def fast_settings(subclouds: int = 3, **sections: dict[str, Any]) -> Settings:
    """An in-process system with fast timers (private SQLite unless ``database`` says so)."""
    base = Settings().replace(
        sim={"subclouds": subclouds},
        engine={
            "safety_sweep_interval": 2.0,
            "offline_retry_interval": 0.5,
            "request_retry_backoff": 0.05,
            "request_retry_backoff_max": 0.5,
            "subcloud_http_timeout": 2.0,
        },
        actors={"restart_backoff": 0.05, "restart_backoff_max": 0.5},
        database={"retry_backoff": 0.05, "retry_backoff_max": 1.0, "retry_attempts": 8},
        service={"shutdown_timeout": 5.0},
    )
    return base.replace(**sections) if sections else base


# -- PostgreSQL ------------------------------------------------------------------------------


def pg_available() -> str | None:
    """None when the server answers, else why not."""
    try:
        with closing(psycopg.connect(PG_ADMIN, connect_timeout=3)):
            return None
    except Exception as exc:  # any failure means: skip the PostgreSQL variants
        return f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A private, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    name = f"dcorch_rel_{uuid.uuid4().hex[:10]}"
    with closing(psycopg.connect(PG_ADMIN, autocommit=True)) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with closing(psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10)) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated(url: str) -> str:
    migrate.upgrade(url)
    return url


# -- direct database probes (a second client, never the service's own connection) ------------


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read-only query against the database at ``url`` (SQLite or PostgreSQL)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            return list(conn.execute(sql, params))
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    with closing(psycopg.connect(dsn, connect_timeout=10)) as conn:
        return list(conn.execute(sql.replace("?", "%s"), params).fetchall())


@dataclass
class WorkView:
    """Every job and request in the database, as the crash checks need them."""

    jobs: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    """job id -> (resource_type, source_resource_id, operation_type)."""
    requests: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)
    """job id -> [(target_region_name, state, deleted)]."""
    orphans: list[tuple[str, str]] = field(default_factory=list)
    """Resources no job and no subcloud mapping refer to (a rolled-back write would leave these)."""

    def jobs_for(self, master_id: str, operation: str = "post") -> list[int]:
        return [j for j, (_, m, op) in self.jobs.items() if m == master_id and op == operation]

    def jobs_for_type(self, resource_type: str, operation: str = "post") -> list[int]:
        return [j for j, (t, _, op) in self.jobs.items() if t == resource_type and op == operation]

    def live_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rows in self.requests.values():
            for _, state, deleted in rows:
                if not deleted:
                    counts[state] = counts.get(state, 0) + 1
        return counts


def work_view(url: str) -> WorkView:
    view = WorkView()
    for jid, rtype, master_id, op in query(
        url,
        "SELECT j.id, r.resource_type, j.source_resource_id, j.operation_type "
        "FROM orch_job j JOIN resource r ON r.id = j.resource_id",
    ):
        view.jobs[jid] = (rtype, master_id, op)
    for jid, region, state, deleted in query(
        url, "SELECT orch_job_id, target_region_name, state, deleted FROM orch_request"
    ):
        view.requests.setdefault(jid, []).append((region, state, deleted))
    view.orphans = [
        (rtype, master_id)
        for rtype, master_id in query(
            url,
            "SELECT resource_type, master_id FROM resource r WHERE "
            "NOT EXISTS (SELECT 1 FROM orch_job j WHERE j.resource_id = r.id) AND "
            "NOT EXISTS (SELECT 1 FROM subcloud_resource s WHERE s.resource_id = r.id)",
        )
    ]
    return view


def count_jobs(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM orch_job")[0][0])


# -- the service as a subprocess ------------------------------------------------------------


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A running ``dcorch serve`` child and what its banner says."""

    process: trio.Process
    api_url: str
    identity_url: str
    sim_url: str
    token: str

    async def kill(self) -> None:
        """``kill -9``: no shutdown code of the service runs."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20) as scope:
            await self.process.wait()
        if scope.cancelled_caught:
            await self.kill()


def service_env(data_dir: Path, database_url: str, subclouds: int = 3) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCORCH_")}
    env.update(
        DCORCH_SERVICE_DATA_DIR=str(data_dir),
        DCORCH_SERVICE_LOG_LEVEL="WARNING",
        DCORCH_SIM_SUBCLOUDS=str(subclouds),
        DCORCH_ENGINE_SAFETY_SWEEP_INTERVAL="1",
        DCORCH_ENGINE_REQUEST_RETRY_BACKOFF="0.05",
        DCORCH_ENGINE_REQUEST_RETRY_BACKOFF_MAX="0.5",
        DCORCH_ENGINE_SUBCLOUD_HTTP_TIMEOUT="5",
        DCORCH_DATABASE_RETRY_BACKOFF="0.05",
        DCORCH_DATABASE_RETRY_BACKOFF_MAX="1",
    )
    if database_url:
        env["DCORCH_DATABASE_URL"] = database_url
    return env


_LINE = re.compile(r"^\s+(dcorch v1 API|identity proxy|simulated clouds)\s+(\S+)")


async def start_service(env: dict[str, str], log_path: Path) -> Service:
    """Start ``dcorch serve`` on fresh free ports and wait for its banner."""
    ports = {
        "DCORCH_PROXY_IDENTITY_PORT": free_port(),
        "DCORCH_PROXY_PLATFORM_PORT": free_port(),
        "DCORCH_PROXY_USM_PORT": free_port(),
        "DCORCH_API_PORT": free_port(),
    }
    env = {**env, **{k: str(v) for k, v in ports.items()}}
    banner = log_path.with_suffix(f".banner{uuid.uuid4().hex[:6]}")
    with log_path.open("ab") as log, banner.open("wb") as out:
        # stdout goes to a file: a pipe nobody drains would break the banner print (EPIPE).
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "dcorch.cli", "serve", "--upgrade-db"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=log,
        )
    seen: dict[str, str] = {}
    with trio.fail_after(60):
        while "token" not in seen:
            if process.poll() is not None:
                raise RuntimeError(f"dcorch serve exited early; see {log_path}")
            for line in (await trio.Path(banner).read_text()).splitlines():
                match = _LINE.match(line)
                if match:
                    seen[match.group(1)] = match.group(2)
                if line.strip().startswith("TOKEN="):
                    seen["token"] = line.strip().split("=", 1)[1]
            await trio.sleep(0.05)
    return Service(
        process=process,
        api_url=seen["dcorch v1 API"],
        identity_url=seen["identity proxy"],
        sim_url=seen["simulated clouds"],
        token=seen["token"],
    )
