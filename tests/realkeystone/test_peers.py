"""The real-Keystone test peers themselves: independent instances, tokens, restart, clean stop.

Also the premise of issue 12 in miniature: a token issued by one Keystone validates on another
exactly when both have the same fernet keys and the same user rows, which is what a DB-sync
agent plus the fernet-key sync give StarlingX.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
import uuid

import pytest

from tests.realkeystone.keystone import (
    KeystoneInstance,
    OpenstackError,
    add_region_endpoint,
    openstack,
    start_in_parallel,
)

# The timeout is a hang guard for real processes on a shared 2-core box (the module's three
# Keystones start inside the first test's budget), not a speed target.
pytestmark = [pytest.mark.keystone, pytest.mark.slow, pytest.mark.timeout(180)]


def create_user(instance: KeystoneInstance, name: str, password: str, token: str) -> str:
    """Create a user through the instance's API; its id."""
    status, _, body = instance.request(
        "POST",
        "/v3/users",
        token=token,
        body={"user": {"name": name, "password": password, "domain_id": "default"}},
    )
    assert status == 201, body
    user_id: str = body["user"]["id"]
    return user_id


def user_status(instance: KeystoneInstance, user_id: str, token: str | None = None) -> int:
    """HTTP status of GET /v3/users/{id} on instance, as its admin."""
    token = token or instance.admin_token()
    status, _, _ = instance.request("GET", f"/v3/users/{user_id}", token=token)
    return status


def copy_user_rows(source: KeystoneInstance, target: KeystoneInstance, user_id: str) -> None:
    """Copy a local user's user, local_user and password rows between two databases."""
    with contextlib.closing(sqlite3.connect(target.db_path)) as db, db:
        db.execute("ATTACH DATABASE ? AS src", (str(source.db_path),))
        db.execute("INSERT INTO user SELECT * FROM src.user WHERE id = ?", (user_id,))
        db.execute(
            "INSERT INTO local_user SELECT * FROM src.local_user WHERE user_id = ?", (user_id,)
        )
        db.execute(
            "INSERT INTO password SELECT * FROM src.password WHERE local_user_id IN"
            " (SELECT id FROM src.local_user WHERE user_id = ?)",
            (user_id,),
        )


@pytest.fixture(scope="module")
def started_peers(keystone_factory):
    """Three Keystones started at once; gamma's cache is off because tests write its database."""
    alpha, beta = keystone_factory.create("alpha", cache=True), keystone_factory.create("beta")
    gamma = keystone_factory.create("gamma", cache=False)
    start_in_parallel([alpha, beta, gamma])
    return alpha, beta, gamma


@pytest.fixture
def peers(started_peers):
    """The module's three Keystones, each running (one a test stopped is started again)."""
    for instance in started_peers:
        instance.start()
    return started_peers


def test_three_start_in_parallel_and_keep_their_own_data(peers):
    first, second, third = peers
    assert len({first.port, second.port, third.port}) == 3
    assert all(instance.pids() for instance in peers)

    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = openstack(first, "user", "create", "--password", "pw-1", name)

    assert created["name"] == name
    assert user_status(first, created["id"]) == 200
    assert user_status(second, created["id"]) == 404
    assert user_status(third, created["id"]) == 404
    with pytest.raises(OpenstackError, match=f"No User found for {name}"):
        openstack(second, "user", "show", name)


def test_token_crosses_keystones_only_with_shared_keys_and_rows(peers):
    issuer, _, other = peers  # other's database and keys are written behind its back
    # All databases are copies of one template, so the bootstrap admin has the same id
    # everywhere: only the fernet keys differ, and that alone makes the other reject the token.
    admin_token = issuer.admin_token()
    other_admin = other.admin_token()
    assert other.validate_token(admin_token, token=other_admin)[0] == 404

    name = f"roaming-{uuid.uuid4().hex[:8]}"
    user_id = create_user(issuer, name, "roaming-pw", admin_token)
    user_token = issuer.issue_token(name, "roaming-pw", project=None)
    shutil.rmtree(other.fernet_keys)
    shutil.copytree(issuer.fernet_keys, other.fernet_keys)
    assert other.validate_token(admin_token, token=admin_token)[0] == 200
    # same keys, but no such user there
    assert other.validate_token(user_token, token=admin_token)[0] == 404

    copy_user_rows(issuer, other, user_id)
    status, body = other.validate_token(user_token, token=admin_token)
    assert status == 200, body
    assert body["token"]["user"]["id"] == user_id
    assert other.issue_token(name, "roaming-pw", project=None)

    # The CLI sends identity calls to the endpoint of the region it is given, while it still
    # authenticates at the instance: how tests route the CLI through the dcorch proxy.
    add_region_endpoint(issuer, "SystemController", other.auth_url, token=admin_token)
    routed = openstack(issuer, "user", "create", f"via-{name}", region="SystemController")
    assert user_status(other, routed["id"], admin_token) == 200
    assert user_status(issuer, routed["id"], admin_token) == 404


def test_restart_keeps_port_and_data_and_stop_leaves_no_process(peers):
    instance = peers[1]
    url = instance.url
    admin_token = instance.admin_token()
    name = f"survivor-{uuid.uuid4().hex[:8]}"
    user_id = create_user(instance, name, "survivor-pw", admin_token)
    token = instance.issue_token(name, "survivor-pw", project=None)
    before = instance.pids()
    assert len(before) >= 2  # gunicorn master and worker

    instance.restart()

    assert instance.url == url
    assert user_status(instance, user_id, admin_token) == 200
    assert instance.validate_token(token, token=admin_token)[0] == 200  # same keys survive too
    assert set(instance.pids()).isdisjoint(before)

    running = instance.pids()
    instance.stop()

    assert not instance.running
    assert instance.pids() == []
    assert not any(_exists(pid) for pid in [*before, *running])
    assert not instance.pid_file.exists()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", instance.port), timeout=2),
    ):
        pass


def _exists(pid: int) -> bool:
    """True while the process lives (an unreaped zombie runs nothing and holds no port)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
