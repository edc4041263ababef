"""Bad input at CI size: the generators and checks of ``./just fuzz`` (``bench/fuzz``), a few
hundred inputs per run on SQLite and PostgreSQL.

Each surface's inputs are drawn by hypothesis with a fixed seed and judged by
:func:`bench.fuzz.surfaces.judge`: no 5xx made by dcorch (a 5xx the proxy relays from the
master is the master's), nothing changed in the database by an input answered 4xx, nothing an
accepted input promised lost, no secret (the admin password, a token, an input's password) in
any log record, no supervised child crashed. The first failing input fails the test, shrunk.
The campaign (``./just fuzz``, not in CI) runs the same surfaces with ten thousand inputs or more.

Below them, regression tests for what the campaign found, each on the surface it broke.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from actors.errors import ActorStopped
from bench.fuzz.campaign import run_surface
from bench.fuzz.checks import Tally
from bench.fuzz.surfaces import strategies
from bench.fuzz.system import FuzzSystem, fuzz_settings, open_fuzz_system, postgres_database
from dcorch import constants
from dcorch.harness import register_subclouds

from .conftest import pg_available

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(300)]

CI_INPUTS = {
    "openapi": 100,
    "api": 80,
    "identity": 100,
    "platform": 60,
    "raw": 40,
    "dbsync-sim": 50,
}
"""432 inputs in all, as the suite drew before the campaign shared its generators."""
AGENT_INPUTS = 60
SEED = 20261204


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def system(request: pytest.FixtureRequest) -> Iterator[FuzzSystem]:
    """The fuzzed system, shared by the module's tests (each leaves it as it found it)."""
    if request.param == "postgresql":
        reason = pg_available()
        if reason:
            pytest.skip(reason)
        with postgres_database() as url, open_fuzz_system(fuzz_settings(SEED, url)) as running:
            yield running
    else:
        with open_fuzz_system(fuzz_settings(SEED)) as running:
            yield running


def fuzz(system: FuzzSystem, surface: str, count: int) -> Tally:
    tally = Tally()
    strategy = strategies(system, [surface])[surface]
    run_surface(system, surface, strategy, count, SEED, tally, strict=True)
    assert tally.surfaces[surface].inputs >= count * 0.9, "hypothesis gave up early"
    assert system.scan.hits == 0, system.scan.examples
    assert not system.scan.child_crashes, system.scan.child_crashes[0]
    return tally


@pytest.mark.parametrize("surface", list(CI_INPUTS))
def test_bad_input_is_refused_cleanly(system: FuzzSystem, surface: str) -> None:
    tally = fuzz(system, surface, CI_INPUTS[surface])
    statuses = tally.surfaces[surface].statuses
    assert statuses["4xx"] > 0, statuses  # the inputs do reach the checks they are meant for
    print(f"\nbad input {surface}: {dict(statuses)}")


@pytest.mark.keystone
def test_dbsync_agent_refuses_bad_input_cleanly(system: FuzzSystem) -> None:
    """The agent over a keystone-schema database (keystone-manage's), tokens checked by the
    spare simulated cloud's keystone."""
    system.start_agent()
    tally = fuzz(system, "dbsync-agent", AGENT_INPUTS)
    assert tally.surfaces["dbsync-agent"].statuses["4xx"] > 0


def test_the_converged_system_stays_converged(system: FuzzSystem) -> None:
    """Last in the module: whatever the inputs above had accepted reached the subclouds."""
    assert system.wait_converged(120) == {}


# -- regressions found by the campaign -------------------------------------------------------


def _raw(system: FuzzSystem, target: str, data: bytes, *, pause: float = 0.0) -> bytes:
    """Send ``data`` as it is, then stop writing (after ``pause``); what came back."""
    url = urlsplit(system.base_url(target))
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as sock:
        sock.sendall(data.replace(b"TOKEN", system.dc.token.encode()))
        time.sleep(pause)
        sock.shutdown(socket.SHUT_WR)
        try:
            return sock.recv(200)
        except OSError:
            return b""


@pytest.mark.parametrize(
    ("target", "path"),
    [("api", b"/v1.0/admin/subclouds"), ("identity", b"/v3/users"), ("platform", b"/v1/iuser/x")],
)
def test_bodies_cut_short_never_stop_a_listener(
    system: FuzzSystem, target: str, path: bytes
) -> None:
    """A body cut short while the app already answers made hypercorn raise in its connection
    task, which stopped the whole listener (the v1 API went away after about five such
    requests); now only that connection ends."""
    base = system.base_url(target)
    chance = random.Random(SEED)
    for _ in range(120):
        method = chance.choice([b"PATCH", b"POST", b"PUT", b"GET", b"DELETE"])
        head = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nX-Auth-Token: TOKEN\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\n"
        pause = chance.random() * 0.01 if chance.random() < 0.5 else 0.0
        _raw(system, target, head + b'{"a"}'[: chance.randint(0, 4)], pause=pause)
    assert system.base_url(target) == base
    answer = system.http.get(base + "/", headers=system.dc.auth)
    assert answer.status_code < 500
    assert not system.scan.child_crashes


@pytest.mark.parametrize(
    ("target", "method", "path"),
    [
        ("api", "POST", "/v1.0/admin/subclouds"),
        ("api", "PUT", "/v1.0/admin/subclouds/subcloud1/initial-sync"),
        ("dbsync-sim", "POST", "/identity/users/"),
        ("identity", "POST", "/v3/users"),
    ],
)
def test_deeply_nested_json_is_a_400(
    system: FuzzSystem, target: str, method: str, path: str
) -> None:
    """json's parser recurses per level: ``[[[[...`` a few thousand deep raised RecursionError,
    answered 500 by the v1 API, the DB-sync agent and the simulator."""
    token = system.spare_token if target.startswith("dbsync") else system.dc.token
    answer = system.http.request(
        method,
        system.base_url(target) + path,
        content=b"[" * 5_000 + b"]" * 5_000,
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert system.scan.master_crashes == 0


@pytest.mark.keystone
def test_agent_refuses_deeply_nested_json_and_unstorable_text(system: FuzzSystem) -> None:
    system.start_agent()
    url = system.base_url("dbsync-agent") + "/identity/roles/"
    headers = {"X-Auth-Token": system.spare_token, "Content-Type": "application/json"}
    deep = system.http.post(url, content=b"[" * 5_000 + b"]" * 5_000, headers=headers)
    assert deep.status_code == 400, deep.text
    for role_id in ("\ud800", "a\x00b"):
        body = {"role": {"id": role_id, "name": "fz-role", "domain_id": "<<null>>"}}
        answer = system.http.post(url, content=json.dumps(body).encode(), headers=headers)
        assert answer.status_code == 400, answer.text
        assert "role.id holds a NUL or a lone surrogate" in answer.text


def test_a_client_leaving_mid_delete_still_stops_the_sync_actor(system: FuzzSystem) -> None:
    """quart-trio cancels a handler when its client goes; between the delete's commit and the
    engine's notice that left the deleted subcloud's sync actor spinning on the missing row.
    The client leaves at a range of moments: whatever got done, the two agree."""
    dc = system.dc
    manager = dc.sync_manager
    assert manager is not None

    async def actor_running(region: str) -> bool:
        try:
            await manager.sync_now(region)
        except ActorStopped:
            return False
        return True

    for i in range(16):
        region = f"fz-leaving-{i}"
        system.call(register_subclouds, dc, [region])
        request = f"DELETE /v1.0/admin/subclouds/{region} HTTP/1.1\r\nHost: x\r\n"
        _raw(system, "api", request.encode() + b"X-Auth-Token: TOKEN\r\n\r\n", pause=i * 0.001)
        time.sleep(0.3)
        deleted = system.subcloud(region) is None
        assert system.call(actor_running, region) is not deleted, (i, deleted)
        if not deleted:
            system.call(dc.db.delete_subcloud, region)
            system.call(manager.subcloud_deleted, region)
    row = system.subcloud("subcloud1")
    assert row is not None
    assert row.management_state == constants.MANAGEMENT_MANAGED


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "", {"subcloud": "fz-nul", "software_version": "24.09\x00"}, 400),
        ("POST", "", {"subcloud": "fz-surrogate", "software_version": "\ud800"}, 400),
        ("POST", "", {"subcloud": "fz-long", "software_version": "v" * 256}, 400),
        ("POST", "", {"subcloud": "fz-newline\n"}, 400),
        ("PUT", "/subcloud1", {"management_ip": "fe80::1%" + "z" * 80}, 400),
        ("PUT", "/%00", {"management_state": "managed"}, 404),
        ("GET", "/a%00b/sync-status", None, 404),
    ],
)
def test_text_the_database_cannot_hold_is_refused(
    system: FuzzSystem, method: str, path: str, body: object, status: int
) -> None:
    """Found by ./just fuzz on PostgreSQL: a NUL, a lone surrogate or text longer than its
    column reached the database and came back as a 500; a NUL in a region path too."""
    before = system.snapshot("api")
    answer = system.http.request(
        method,
        f"{system.dc.api_url}/v1.0/admin/subclouds{path}",
        content=None if body is None else json.dumps(body).encode(),
        headers={**system.dc.auth, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert system.snapshot("api") == before


@pytest.mark.keystone
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/identity/roles/%00"),
        ("PUT", "/identity/users/a%00b"),
        ("GET", "/identity/token-revocation-events/audits/%00"),
        ("DELETE", "/identity/token-revocation-events/audits/%00"),
        ("GET", "/identity/token-revocation-events/users/AF8yMDI2LTAxLTAxVDAwOjAwOjAw"),
    ],
)
def test_agent_ids_no_row_can_have_are_404(system: FuzzSystem, method: str, path: str) -> None:
    """Found by ./just fuzz with the agent on PostgreSQL: a NUL in an id in the path (or in a
    per-user event id's user) reached the query and came back as a 500."""
    system.start_agent()
    before = system.snapshot("dbsync-agent")
    answer = system.http.request(
        method,
        system.base_url("dbsync-agent") + path,
        content=b'{"role": {}}' if method == "PUT" else None,
        headers={"X-Auth-Token": system.spare_token, "Content-Type": "application/json"},
    )
    assert answer.status_code == 404, answer.text
    assert system.snapshot("dbsync-agent") == before
