"""Honest status: a request that changed nothing says why, and never alarms for a right end state.

The assembled system on SQLite and PostgreSQL; work through the identity proxy, faults through
the simulator, state through the dcorch v1 API (``orch-requests``, ``/metrics``), the reports
the simulated dcmanager received, the ``subcloud_sync`` rows, and the service's log.

* A user created and deleted through the proxy while a subcloud is offline: when it is back its
  create finds the master without the user, but the delete queued after it makes the end state
  right, so the create is ``completed`` (result ``superseded``), not ``failed``, and the pair is
  in sync and not alarmable once the queue is drained (docs/behaviour.md#no-op-completions).
* A user made on the master directly (dcorch never mapped it), then patched and deleted through
  the proxy: both requests end ``completed`` with result ``no_mapping``, counted in ``/metrics``
  and logged with their ids.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from dcorch import constants as c
from dcorch.harness import Dcorch, open_dcorch
from dcorch.remote.clients import MASTER_READ_TTL
from dcorch.settings import Settings
from tests.conftest import harness_settings
from tests.integration.test_master_outage import api, create_user, metric, wait_enabled
from tests.reliability.conftest import pg_database  # noqa: F401 - fixture

IDENTITY = c.ENDPOINT_TYPE_IDENTITY
NOOP = "dcorch_requests_noop_total"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Three subclouds, a quick retry of unreachable ones; a private SQLite file or PostgreSQL
    database."""
    base = harness_settings(
        subclouds=3,
        engine={
            "offline_retry_interval": 0.5,
            "safety_sweep_interval": 1.0,
            "subcloud_http_timeout": 2.0,
        },
    )
    if request.param == "sqlite":
        return base
    return base.replace(database={"url": request.getfixturevalue("pg_database")})


async def orch_requests(dc: Dcorch, region: str, uid: str, *states: str) -> list[dict[str, Any]]:
    response = await dc.client.get(
        api(dc, f"/{region}/orch-requests"), params={"state": list(states)}, headers=dc.auth
    )
    assert response.status_code == 200, response.text
    return [r for r in response.json()["orch_requests"] if r["source_resource_id"] == uid]


async def enabled(dc: Dcorch) -> None:
    """Initial syncs done, queues empty, and every pair's enable-time audit over."""
    assert dc.sim is not None
    await wait_enabled(dc)
    with trio.fail_after(30):
        for region in dc.sim.regions:
            while any(  # noqa: ASYNC110
                s.audit_status == c.AUDIT_NONE for s in await dc.db.list_subcloud_syncs(region)
            ):
                await trio.sleep(0.05)


async def drained(dc: Dcorch) -> None:
    """No request queued or in progress, and every actor's passes (and reports) over."""
    assert dc.sim is not None
    assert dc.sync_manager is not None
    with trio.fail_after(30):
        while True:
            counts = await dc.db.count_requests_by_state()
            if not counts.get(c.ORCH_REQUEST_QUEUED) and not counts.get(c.ORCH_REQUEST_IN_PROGRESS):
                break
            await trio.sleep(0.05)
        for region in dc.sim.regions:
            await dc.sync_manager.sync_now(region)


async def assert_in_sync_everywhere(dc: Dcorch) -> None:
    """No live request left; dcmanager last heard in-sync, not alarmable; the rows agree."""
    assert dc.sim is not None
    assert await dc.db.count_requests_by_state() == {}
    for region in dc.sim.regions:
        last = dc.sim.status_reports(region, IDENTITY)[-1]
        assert (last["sync_status"], last["alarmable"]) == (c.SYNC_STATUS_IN_SYNC, False), region
        [row] = [s for s in await dc.db.list_subcloud_syncs(region) if s.endpoint_type == IDENTITY]
        assert row.sync_status_reported == c.SYNC_STATUS_IN_SYNC, region
        assert row.sync_request == c.SYNC_REQUEST_COMPLETED, region


def noop_lines(caplog: pytest.LogCaptureFixture, uid: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
        and r.getMessage().startswith("sync.noop ")
        and f"master_id={uid} " in r.getMessage()
    ]


def ops_of(dc: Dcorch, region: str, uid: str) -> list[str]:
    assert dc.sim is not None
    operations = dc.sim.dump(region)["operations"]
    return [op["op"] for op in operations if uid in (op.get("id"), op.get("new_id"))]


async def test_create_then_delete_while_a_subcloud_is_offline_ends_in_sync_without_alarm(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        assert dc.sim is not None
        await enabled(dc)
        offline, *online = dc.sim.regions
        dc.sim.set_faults(offline, offline=True)

        uid = await create_user(dc, "fleeting")
        # The online subclouds get the user before it is deleted (so each of their requests
        # has its master record); the offline one holds both requests, in order.
        with trio.fail_after(30):
            while not all(uid in dc.sim.subcloud(r).identity.users for r in online):  # noqa: ASYNC110
                await trio.sleep(0.05)
        deleted = await dc.client.delete(f"{dc.identity_url}/v3/users/{uid}", headers=dc.auth)
        assert deleted.status_code == 204, deleted.text
        held = await orch_requests(dc, offline, uid, c.ORCH_REQUEST_QUEUED, "in-progress")
        assert [r["operation_type"] for r in held] == [c.OPERATION_POST, c.OPERATION_DELETE]
        assert uid not in dc.sim.master.identity.users
        # A real outage outlasts the master record shared by the job's requests: a retry within
        # MASTER_READ_TTL may still copy the cached record (then the delete removes it: right
        # too, but not the case here); after it, the create reads the master afresh.
        await trio.sleep(MASTER_READ_TTL + 0.5)

        reported = len(dc.sim.status_reports(offline, IDENTITY))
        dc.sim.clear_faults(offline)
        await drained(dc)

        await assert_in_sync_everywhere(dc)
        after = dc.sim.status_reports(offline, IDENTITY)[reported:]
        assert after, "the recovered pair reported its status"
        assert [(r["sync_status"], r["alarmable"]) for r in after] == [
            (c.SYNC_STATUS_IN_SYNC, False)
        ]
        for region in dc.sim.regions:
            assert uid not in dc.sim.subcloud(region).identity.users, region
            assert await orch_requests(dc, region, uid, c.ORCH_REQUEST_FAILED) == []
        assert ops_of(dc, offline, uid) == []  # the create was never applied there

        done = await orch_requests(dc, offline, uid, c.ORCH_REQUEST_COMPLETED)
        assert [(r["operation_type"], r["result"]) for r in done] == [
            (c.OPERATION_POST, "superseded"),
            (c.OPERATION_DELETE, "no_mapping"),
        ]
        for region in online:
            seen = await orch_requests(dc, region, uid, c.ORCH_REQUEST_COMPLETED)
            assert [(r["operation_type"], r["result"]) for r in seen] == [
                (c.OPERATION_POST, None),
                (c.OPERATION_DELETE, None),
            ]

        body = (await dc.client.get(f"{dc.api_url}/metrics")).text
        labels = {"endpoint_type": IDENTITY, "resource_type": "users"}
        assert metric(body, NOOP, **labels, operation="post", reason="superseded") == 1.0
        assert metric(body, NOOP, **labels, operation="delete", reason="no_mapping") == 1.0
        assert noop_lines(caplog, uid) == [
            f"sync.noop region={offline} endpoint={IDENTITY} id={r['id']} resource_type=users "
            f"operation={r['operation_type']} master_id={uid} reason={r['result']}"
            for r in done
        ]


async def test_patch_and_delete_of_an_unmapped_user_complete_with_the_reason_shown(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        assert dc.sim is not None
        await enabled(dc)
        regions = dc.sim.regions
        # Made on the master's keystone directly, not through the proxy: nothing is recorded,
        # so no subcloud has it or a mapping for it.
        body = {"user": {"name": "bypass", "password": "bypass-pw-1", "domain_id": "default"}}
        made = await dc.client.post(
            f"{dc.sim.endpoints.master_keystone}/users", json=body, headers=dc.auth
        )
        assert made.status_code == 201, made.text
        uid = str(made.json()["user"]["id"])

        patched = await dc.client.patch(
            f"{dc.identity_url}/v3/users/{uid}",
            json={"user": {"description": "v2"}},
            headers=dc.auth,
        )
        assert patched.status_code == 200, patched.text
        await drained(dc)
        deleted = await dc.client.delete(f"{dc.identity_url}/v3/users/{uid}", headers=dc.auth)
        assert deleted.status_code == 204, deleted.text
        await drained(dc)

        await assert_in_sync_everywhere(dc)
        for region in regions:
            done = await orch_requests(dc, region, uid, c.ORCH_REQUEST_COMPLETED)
            assert [(r["operation_type"], r["state"], r["result"]) for r in done] == [
                (c.OPERATION_PATCH, c.ORCH_REQUEST_COMPLETED, "no_mapping"),
                (c.OPERATION_DELETE, c.ORCH_REQUEST_COMPLETED, "no_mapping"),
            ], region
            assert "resource_info" not in done[0]
            assert ops_of(dc, region, uid) == [], region  # nothing changed anywhere

        metrics = (await dc.client.get(f"{dc.api_url}/metrics")).text
        labels = {"endpoint_type": IDENTITY, "resource_type": "users", "reason": "no_mapping"}
        assert metric(metrics, NOOP, **labels, operation="patch") == float(len(regions))
        assert metric(metrics, NOOP, **labels, operation="delete") == float(len(regions))
        assert f"# TYPE {NOOP} counter" in metrics

        lines = noop_lines(caplog, uid)
        assert len(lines) == 2 * len(regions), lines
        for region in regions:
            done = await orch_requests(dc, region, uid, c.ORCH_REQUEST_COMPLETED)
            for request in done:
                expected = (
                    f"sync.noop region={region} endpoint={IDENTITY} id={request['id']} "
                    f"resource_type=users operation={request['operation_type']} "
                    f"master_id={uid} reason=no_mapping"
                )
                assert expected in lines, (expected, lines)
