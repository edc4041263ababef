"""``dcorch dbsync``: the agent as an operator starts it, and the errors that stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dcorch.dbsync.agent import AgentConfigError, async_database_url, keystone_root
from tests.realkeystone.keystone import ADMIN_PASSWORD, KeystoneInstance, free_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcorch.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_keystone_urls_map_to_their_asyncio_drivers() -> None:
    assert async_database_url("sqlite:////var/lib/k.db") == "sqlite+aiosqlite:////var/lib/k.db"
    assert (
        async_database_url("postgresql+psycopg2://ks:pw@db:5432/keystone")
        == "postgresql+asyncpg://ks:pw@db:5432/keystone"
    )
    assert async_database_url("postgresql://ks@db/k") == "postgresql+asyncpg://ks@db/k"
    assert (
        async_database_url("mysql+pymysql://ks:pw@db/keystone?charset=utf8")
        == "mysql+aiomysql://ks:pw@db/keystone?charset=utf8"
    )
    assert async_database_url("sqlite+aiosqlite:///k.db") == "sqlite+aiosqlite:///k.db"
    for bad, message in (
        ("", "keystone_database_url is not set"),
        ("not a url", "is not a database URL"),
        ("oracle://x/y", "unsupported backend 'oracle'"),
    ):
        with pytest.raises(AgentConfigError, match=message):
            async_database_url(bad)
    assert keystone_root("http://k:5000/v3/") == "http://k:5000"
    with pytest.raises(AgentConfigError, match="keystone_url is not set"):
        keystone_root("")


def test_missing_settings_stop_start_up_naming_the_key() -> None:
    done = run_cli("dbsync", env={"DCORCH_DBSYNC_KEYSTONE_URL": "http://127.0.0.1:1"})
    assert done.returncode == 2
    assert "dbsync.keystone_database_url is not set" in done.stderr


def test_a_database_that_is_not_keystones_stops_start_up(tmp_path: Path) -> None:
    env = {
        "DCORCH_DBSYNC_KEYSTONE_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        "DCORCH_DBSYNC_KEYSTONE_URL": "http://127.0.0.1:1",
    }
    done = run_cli("dbsync", "--port", "0", env=env)
    assert done.returncode == 2, done.stderr
    assert "not a keystone database (missing user, local_user" in done.stderr
    assert "keystone-manage db_sync" in done.stderr


@pytest.mark.keystone
@pytest.mark.timeout(300)
def test_dcorch_dbsync_serves_until_sigterm(keystones: dict[str, KeystoneInstance]) -> None:
    keystone = keystones["subcloud"]
    port = free_port()
    env = {
        **os.environ,
        "DCORCH_DBSYNC_KEYSTONE_DATABASE_URL": keystone.db_url,
        "DCORCH_DBSYNC_KEYSTONE_URL": keystone.url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dcorch.cli", "dbsync", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr
            assert time.monotonic() < deadline, "dcorch dbsync did not answer within 60 s"
            time.sleep(0.2)
        token = keystone.issue_token(password=ADMIN_PASSWORD)
        users = httpx.get(f"{base}/v1.0/identity/users/", headers={"X-Auth-Token": token})
        assert users.status_code == 200
        assert "admin" in {u["local_user"]["name"] for u in users.json()}
        assert httpx.get(f"{base}/v1.0/identity/users/").status_code == 401
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"dcorch dbsync is running: http://127.0.0.1:{port}/v1.0" in out
    assert token not in out + err


def test_dcorch_config_shows_the_agent_settings_with_the_database_password_masked() -> None:
    env = {
        "DCORCH_DBSYNC_KEYSTONE_DATABASE_URL": "postgresql://keystone:db-Secret-9@db:5432/keystone",
        "DCORCH_DBSYNC_PORT": "8220",
    }
    done = run_cli("config", env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["dbsync"]
    assert shown["keystone_database_url"] == "postgresql://keystone:******@db:5432/keystone"
    assert shown["port"] == 8220
    assert shown["keystone_url"] == ""
    assert "db-Secret-9" not in done.stdout
