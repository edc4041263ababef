"""Fernet key rotation through the whole system: real HTTP, simulated clouds, SQLite and PostgreSQL.

The service rotates the simulated master's keys every ``engine.fernet_rotation_interval`` (short
here) and pushes each new repository to the subclouds; tokens the master keystone issues after
a rotation validate on the subclouds' keystones, and tokens signed only by a key the rotation
dropped stop validating there. The timing is real, so the tests follow the rotations through
the master's repository instead of assuming when they happen.
"""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dcorch import constants as c
from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import SimSettings
from dcorch.sim import SimCloud, open_sim_cloud
from tests.conftest import harness_settings
from tests.db.conftest import pg_server  # noqa: F401 - fixture
from tests.integration.test_configured_endpoints import (
    _add,
    _initial_sync_ends,
    _manage,
    _real_master,
    _real_mode,
    _settings,
    _sim_urls,
)
from tests.sim.test_fernet_rotation import signing_key

ROTATE_EVERY = 1.5
"""Seconds between rotations in these tests (168 h in production)."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``[database]`` section: the harness's private SQLite file, or a new PostgreSQL DB."""
    if request.param == "sqlite":
        return {}
    server = request.getfixturevalue("pg_server")
    if isinstance(server, str):
        pytest.skip(server)
    return {"url": server.create(f"_{uuid.uuid4().hex[:6]}")}


def _rotating(database: dict[str, Any]) -> Any:
    return harness_settings(
        subclouds=3,
        engine={"fernet_rotation_interval": ROTATE_EVERY},
        database=database,
    )


async def _validate(client: httpx.AsyncClient, keystone: str, token: str) -> int:
    """The status of a token validating itself (``GET /v3/auth/tokens``) at one keystone."""
    headers = {"X-Auth-Token": token, "X-Subject-Token": token}
    return (await client.get(f"{keystone}/auth/tokens", headers=headers)).status_code


async def _rotations_since(dc: Dcorch, count: int) -> None:
    """Wait until the service has completed ``count`` more rotations than now."""
    assert dc.fernet_rotation is not None
    target = dc.fernet_rotation.stats.rotations + count
    with trio.fail_after(10 * ROTATE_EVERY * count):
        while dc.fernet_rotation.stats.rotations < target:  # noqa: ASYNC110 - the service's
            await trio.sleep(0.05)


def _same_keys(sim: SimCloud, region: str) -> bool:
    return sim.subcloud(region).platform.fernet_keys == sim.master.platform.fernet_keys


async def test_rotated_keys_reach_every_subcloud_and_new_master_tokens_validate_there(
    database: dict[str, Any],
) -> None:
    async with open_dcorch(_rotating(database), ephemeral_ports=True, presynced=True) as dc:
        sim = dc.sim
        assert sim is not None
        assert dc.fernet_rotation is not None
        managed = list(sim.regions)
        # A registered subcloud that is never managed gets no work: it keeps the repository it
        # had when it was last in step with the master, the control of this test.
        [control] = await dc.add_subclouds(1, manage=False)
        sim.subcloud(control).platform.set_fernet_keys(sim.master.platform.fernet_keys)
        keys_before = dict(sim.master.platform.fernet_keys)
        old = await sim.login(dc.client)
        signer = signing_key(old, sim.master.platform.fernet_keys)

        # Two rotations later the key that signed it is gone from the master's repository.
        with trio.fail_after(20 * ROTATE_EVERY):
            while signer in sim.master.platform.fernet_keys:  # noqa: ASYNC110 - the sim's state
                await trio.sleep(0.05)
        await dc.wait_converged(managed, timeout=30)
        # No checkpoint since the convergence check: no rotation in between.
        assert all(_same_keys(sim, region) for region in managed)
        assert all(signer not in sim.subcloud(r).platform.fernet_keys for r in managed)
        assert sim.subcloud(control).platform.fernet_keys == keys_before

        new = await sim.login(dc.client)
        assert signing_key(new, sim.master.platform.fernet_keys) not in keys_before
        for region in managed:
            assert await _validate(dc.client, sim.endpoints.subcloud_keystone(region), new) == 200
        # Without the pushed keys the subcloud cannot read it: the push is what makes it valid.
        assert await _validate(dc.client, sim.endpoints.subcloud_keystone(control), new) == 401

        # Signed only by the dropped key: refused by the master and by every subcloud that got
        # the new repository, still accepted where the old repository stayed.
        assert await _validate(dc.client, sim.endpoints.master_keystone, old) == 401
        for region in managed:
            assert await _validate(dc.client, sim.endpoints.subcloud_keystone(region), old) == 401
        assert await _validate(dc.client, sim.endpoints.subcloud_keystone(control), old) == 200

        # The keys went as work: a put per eligible subcloud, through sysinv, none to the control.
        last = dc.fernet_rotation.stats.last
        assert last is not None
        assert sorted(last.target_regions) == sorted(managed)
        for region in managed:
            assert "put_fernet_repo" in [o["op"] for o in sim.subcloud(region).operations]
        assert not [o for o in sim.subcloud(control).operations if "fernet" in o["op"]]
        assert any(o["op"] == "rotate_fernet_keys" for o in sim.master.operations)


async def test_a_subcloud_waiting_only_for_rotated_keys_is_out_of_sync_but_not_alarmed(
    database: dict[str, Any],
) -> None:
    async with open_dcorch(_rotating(database), ephemeral_ports=True, presynced=True) as dc:
        sim = dc.sim
        assert sim is not None
        assert dc.fernet_rotation is not None
        down, *up = sim.regions
        sim.set_faults(down, offline=True)
        await _rotations_since(dc, 2)
        await dc.wait_converged(up, timeout=30)

        def reports() -> list[dict[str, Any]]:
            return [
                r
                for r in sim.status_reports(down, c.ENDPOINT_TYPE_PLATFORM)
                if r["sync_status"] == c.SYNC_STATUS_OUT_OF_SYNC
            ]

        with trio.fail_after(30):
            while not reports():  # noqa: ASYNC110 - the simulated dcmanager's state
                await trio.sleep(0.05)
        pending = await dc.db.pending_requests(down, c.ENDPOINT_TYPE_PLATFORM)
        assert len(pending) >= 2  # one put per rotation, queued behind the unreachable subcloud
        assert {(r.resource_type, r.source_resource_id, r.operation_type) for r in pending} == {
            (c.RESOURCE_FERNET_REPO, "keys", c.OPERATION_PUT)
        }
        assert {r.state for r in pending} <= {c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_IN_PROGRESS}
        assert all(r["alarmable"] is False for r in reports())  # no 280.002 (upstream 18f54a44)

        sim.clear_faults(down)
        with trio.fail_after(30):
            while sim.latest_status(down, c.ENDPOINT_TYPE_PLATFORM) != c.SYNC_STATUS_IN_SYNC:  # noqa: ASYNC110
                await trio.sleep(0.05)
        await dc.wait_converged(timeout=30)
        assert all(_same_keys(sim, region) for region in sim.regions)
        assert all(r["alarmable"] is False for r in reports())


# -- production wiring: the configured command against a real (here simulated) master --------

ROTATE_SCRIPT = """
import base64, json, os, sys, urllib.request

keystone, sysinv, user, password, project = sys.argv[1:]


def call(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers, json.loads(response.read() or b"null")


scope = {"project": {"name": project, "domain": {"name": "Default"}}}
auth = {"identity": {"methods": ["password"], "password": {"user": {
    "name": user, "domain": {"name": "Default"}, "password": password}}}, "scope": scope}
headers, _ = call("POST", keystone + "/auth/tokens", {"auth": auth})
token = headers["X-Subject-Token"]
_, repo = call("GET", sysinv + "/fernet_repo", token=token)
keys = {int(entry["id"]): entry["key"] for entry in repo}
keys[max(keys) + 1] = keys.pop(0)
keys[0] = base64.urlsafe_b64encode(os.urandom(32)).decode()
for old in sorted((i for i in keys if i), reverse=True)[2:]:
    del keys[old]
call("PUT", sysinv + "/fernet_repo", [{"id": i, "key": k} for i, k in sorted(keys.items())], token)
print("rotated", sorted(keys))
"""
"""Rotates a master's repository through its sysinv (``fernet_repo``), as keystone would."""


async def test_the_configured_command_rotates_a_real_master_and_the_keys_reach_the_subcloud(
    tmp_path: Path,
) -> None:
    script = tmp_path / "rotate-fernet-keys.py"
    script.write_text(ROTATE_SCRIPT)
    async with open_sim_cloud(SimSettings(subclouds=1)) as sim:
        ends, admin = sim.endpoints, sim.admin
        command = [sys.executable, str(script), ends.master_keystone, ends.master_sysinv]
        command += [admin.username, admin.password, admin.project_name]
        settings = _settings(
            _real_master(sim),
            engine={
                "fernet_rotation_interval": ROTATE_EVERY,
                "fernet_rotation_command": command,
            },
        )
        async with open_dcorch(settings, ephemeral_ports=True) as dc:
            assert dc.sim is None  # production wiring: the command rotates the master
            assert dc.fernet_rotation is not None
            [region] = sim.regions
            await _add(dc, region, management_ip="127.0.0.2", endpoints=_sim_urls(sim, region))
            await _manage(dc, region)
            assert await _initial_sync_ends(dc, region) == c.INITIAL_SYNC_COMPLETED
            keys_before = dict(sim.master.platform.fernet_keys)
            # Two: a token signed after them needs the first one's push to validate there.
            await _rotations_since(dc, 2)
            primary_before = keys_before[max(keys_before)]
            assert primary_before not in sim.master.platform.fernet_keys.values()
            await sim.wait_converged([region], timeout=30)
            assert _same_keys(sim, region)
            token = await sim.login(dc.client)
            keystone = ends.subcloud_keystone(region)
            assert await _validate(dc.client, keystone, token) == 200


async def test_a_keystone_only_master_has_no_rotation_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dcorch.service")
    async with _real_mode(0, sysinv=False) as (_, dc):
        assert dc.fernet_rotation is None
        names = [spec.name for spec in dc.system.snapshot().children]
        assert "fernet-rotation" not in names
    off = [r.getMessage() for r in caplog.records if "fernet_rotation" in r.getMessage()]
    assert off == [
        "fernet_rotation.off reason=no master sysinv (platform sync off): "
        "nothing to rotate keys for or push them to"
    ]
