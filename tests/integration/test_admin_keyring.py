"""The admin keyring repair (upstream 9e209f4e) through the assembled system.

The service is wired as in production (``dcorch.service``), with the simulated clouds as peers
and dcorch logging in as ``admin``, so the repair is on. The admin's password drifts on one
subcloud's own DB-sync API (a DB write: no token is revoked, dcorch's cached token still works,
as with a restored or hand-edited keystone database). The periodic audit must then PATCH the
central password through the subcloud's keystone (which updates its keyring) before the
DB-sync PUT makes the record the master's, and everything must end in sync
(docs/behaviour.md#audit). Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from sqlalchemy import Connection, select

from dcorch import constants as c
from dcorch.db.schema import orch_job
from dcorch.harness import Dcorch, open_dcorch
from dcorch.sim.endpoints import DCDBSYNC, KEYSTONE
from dcorch.sim.records import password_row
from dcorch.sim.tokens import hash_password
from dcorch.sync.drivers.identity import CENTRAL_PASSWORD
from tests.conftest import harness_settings
from tests.reliability.conftest import pg_database  # noqa: F401 - fixture

REGION = "subcloud1"
OTHER = "subcloud2"
AUDIT_INTERVAL = 1.0
"""Seconds between audits of a pair: the drift is found within about a second."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def dc(request: pytest.FixtureRequest) -> AsyncIterator[Dcorch]:
    """Two managed subclouds, converged and idle, audited every second."""
    sections: dict[str, dict[str, object]] = {"engine": {"audit_interval": AUDIT_INTERVAL}}
    if request.param == "postgres":
        sections["database"] = {"url": request.getfixturevalue("pg_database")}
    settings = harness_settings(subclouds=2, **sections)
    assert settings.master.username == "admin"  # dcorch logs in as admin: the repair is on
    async with open_dcorch(settings, ephemeral_ports=True) as handle:
        await handle.wait_converged(timeout=30)
        await wait_idle(handle)
        yield handle


async def wait_idle(dc: Dcorch) -> None:
    """Initial syncs done and no live request left."""
    assert dc.sim is not None
    with trio.fail_after(30):
        for region in dc.sim.regions:
            while (await dc.db.get_subcloud(region)).initial_sync_state != c.INITIAL_SYNC_COMPLETED:  # noqa: ASYNC110
                await trio.sleep(0.05)
        while await dc.db.count_requests_by_state():  # noqa: ASYNC110
            await trio.sleep(0.05)


def admin_id(dc: Dcorch) -> str:
    assert dc.sim is not None
    admin = dc.sim.master.identity.find_name("user", "default", "admin")
    assert admin is not None
    return str(admin["user"]["id"])


async def drift_admin(dc: Dcorch, **changes: Any) -> None:
    """Rewrite the subcloud's admin record on its own DB-sync API (as drift, not via dcorch)."""
    assert dc.sim is not None
    url = f"{dc.sim.endpoints.subcloud_dcdbsync(REGION)}/identity/users/{admin_id(dc)}"
    headers = {"X-Auth-Token": dc.sim.admin_token(REGION)}
    record = (await dc.client.get(url, headers=headers)).json()
    if "password" in changes:
        now = dc.sim.state.wall_clock()
        record["password"] = [password_row(hash_password(changes.pop("password")), now)]
    record["user"].update(changes)
    response = await dc.client.put(url, json=record, headers=headers)
    assert response.status_code == 200, response.text


async def login(dc: Dcorch, region: str, password: str) -> int:
    """The status of a password login as admin on the region's keystone."""
    assert dc.sim is not None
    body = dc.sim.admin.auth_body()
    body["auth"]["identity"]["password"]["user"]["password"] = password
    url = f"{dc.sim.endpoints.subcloud_keystone(region)}/auth/tokens"
    response: httpx.Response = await dc.client.post(url, json=body)
    return response.status_code


def admin_ops(dc: Dcorch, region: str, after: int) -> list[tuple[str, str, Any]]:
    """(service, op, fields) the region applied to the admin user after op seq ``after``."""
    assert dc.sim is not None
    uid = admin_id(dc)
    return [
        (o["service"], o["op"], o.get("fields"))
        for o in dc.sim.subcloud(region).operations
        if o["seq"] > after and o.get("id") == uid
    ]


def admin_revocations(dc: Dcorch, region: str) -> int:
    assert dc.sim is not None
    events = dc.sim.subcloud(region).identity.revocations.values()
    return sum(1 for e in events if e.get("user_id") == admin_id(dc))


def user_jobs(conn: Connection, master_id: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(orch_job.c.operation_type, orch_job.c.resource_info)
        .where(orch_job.c.source_resource_id == master_id)
        .order_by(orch_job.c.id)
    )
    return [(r.operation_type, r.resource_info) for r in rows]


async def wait_in_sync(dc: Dcorch, region: str) -> None:
    """The pair reports in-sync with nothing live left for the region."""
    assert dc.sim is not None
    with trio.fail_after(15):
        while (  # noqa: ASYNC110
            dc.sim.latest_status(region, c.ENDPOINT_TYPE_IDENTITY) != c.SYNC_STATUS_IN_SYNC
            or await dc.db.pending_requests(region, c.ENDPOINT_TYPE_IDENTITY)
        ):
            await trio.sleep(0.05)


async def wait_audits(dc: Dcorch, region: str, count: int) -> None:
    """``count`` more audits of the region's pairs have finished."""
    assert dc.sync_manager is not None
    handle = dc.sync_manager.handle(region)
    assert handle is not None
    target = handle.audits + count
    with trio.fail_after(15):
        while handle.audits < target:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_admin_password_drift_is_repaired_through_the_keyring_first(dc: Dcorch) -> None:
    assert dc.sim is not None
    central = dc.settings.master.password
    cloud = dc.sim.subcloud(REGION)
    await drift_admin(dc, password="drifted-pw-1")
    start = cloud.op_seq
    assert await login(dc, REGION, central) == 401
    assert await login(dc, REGION, "drifted-pw-1") == 201
    assert "users: differs" in " ".join(dc.sim.differences([REGION])[REGION])
    revoked_before = admin_revocations(dc, REGION)

    with trio.fail_after(15):
        await dc.wait_converged([REGION], timeout=15)
    # The keystone PATCH of the password (the keyring) first, then the DB-sync PUT.
    assert admin_ops(dc, REGION, start) == [
        (KEYSTONE, "update_user", ["password"]),
        (DCDBSYNC, "replace_user", None),
    ]
    assert await login(dc, REGION, central) == 201
    assert await login(dc, REGION, "drifted-pw-1") == 401
    # The PATCH revoked the admin's tokens on that subcloud only (its keystone's own event,
    # which the audit leaves alone); dcorch logged in again with the central password.
    assert admin_revocations(dc, REGION) == revoked_before + 1
    await wait_in_sync(dc, REGION)
    await wait_audits(dc, REGION, 2)  # audits after the repair find nothing more
    assert admin_ops(dc, REGION, start)[2:] == []
    assert await dc.db.pending_requests(REGION, c.ENDPOINT_TYPE_IDENTITY) == []
    await dc.wait_converged(timeout=5)
    sync = await dc.client.get(
        f"{dc.api_url}/v1.0/admin/subclouds/{REGION}/sync-status", headers=dc.auth
    )
    assert sync.json()["endpoints"][c.ENDPOINT_TYPE_IDENTITY]["audit_status"] == "completed"
    # The other subcloud was never touched.
    assert admin_ops(dc, OTHER, 0) == []

    # The database holds what the PATCH is for, never the password.
    jobs = await dc.db.run(user_jobs, admin_id(dc))
    assert [op for op, _ in jobs] == [c.OPERATION_PATCH, c.OPERATION_PUT]
    assert json.loads(jobs[0][1]) == {CENTRAL_PASSWORD: True}
    assert all(central not in (info or "") for _, info in jobs)


async def test_no_keyring_patch_while_the_admin_passwords_match(dc: Dcorch) -> None:
    assert dc.sim is not None
    central = dc.settings.master.password
    cloud = dc.sim.subcloud(REGION)
    start = cloud.op_seq
    # In sync: audits queue nothing at all.
    await wait_audits(dc, REGION, 4)
    assert admin_ops(dc, REGION, start) == []
    assert await dc.db.run(user_jobs, admin_id(dc)) == []

    # Another detail of the admin differs, the password does not: the PUT alone repairs it.
    await drift_admin(dc, extra=json.dumps({"email": "root@example.com"}))
    start = cloud.op_seq
    revoked_before = admin_revocations(dc, REGION)
    with trio.fail_after(15):
        await dc.wait_converged([REGION], timeout=15)
    assert admin_ops(dc, REGION, start) == [(DCDBSYNC, "replace_user", None)]
    await wait_in_sync(dc, REGION)
    await wait_audits(dc, REGION, 2)
    assert admin_ops(dc, REGION, start) == [(DCDBSYNC, "replace_user", None)]
    assert admin_revocations(dc, REGION) == revoked_before  # no admin token was revoked
    assert await login(dc, REGION, central) == 201
    assert [op for op, _ in await dc.db.run(user_jobs, admin_id(dc))] == [c.OPERATION_PUT]
