"""Failures are named and bounded: the assembled system with its master's DB-sync down.

Everything goes through the real interfaces: faults through the simulator's control API, work
through the identity proxy, state through the dcorch v1 API, ``/health`` and ``/metrics``, the
service's log through ``caplog``. Real time, with a 3 s request budget: intervals are checked
from below exactly (a request never times out before its budget) and from above with slack for
a loaded machine.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

import pytest
import trio

from dcorch import constants as c
from dcorch.harness import Dcorch, open_dcorch
from tests.conftest import harness_settings

BUDGET = 3.0
SLACK = 2.0
"""Upper bounds only: how late a loaded 2-core machine may be."""
SUBCLOUDS = 6


def outage_settings(subclouds: int = SUBCLOUDS) -> Any:
    return harness_settings(
        subclouds=subclouds,
        engine={
            "request_time_budget": BUDGET,
            "request_retry_backoff": 0.2,
            "request_retry_backoff_max": 0.5,
            "offline_retry_interval": 0.5,
            "safety_sweep_interval": 1.0,
            "initial_sync_retry": 0.5,
            "subcloud_http_timeout": 2.0,
        },
    )


def api(dc: Dcorch, path: str = "") -> str:
    return f"{dc.api_url}/v1.0/admin/subclouds{path}"


def messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def metric(body: str, name: str, **labels: str) -> float | None:
    """One sample of the Prometheus text ``body`` (labels in any order), None if absent."""
    for line in body.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return None


async def create_user(dc: Dcorch, name: str) -> str:
    body = {"user": {"name": name, "password": f"{name}-pw-1", "domain_id": "default"}}
    response = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert response.status_code == 201, response.text
    return str(response.json()["user"]["id"])


async def requests_for(dc: Dcorch, region: str, uid: str, state: str) -> list[dict[str, Any]]:
    response = await dc.client.get(
        api(dc, f"/{region}/orch-requests"), params={"state": state}, headers=dc.auth
    )
    assert response.status_code == 200, response.text
    return [r for r in response.json()["orch_requests"] if r["source_resource_id"] == uid]


async def wait_enabled(dc: Dcorch) -> None:
    """Initial syncs and enable-time audits done, nothing queued."""
    assert dc.sim is not None
    await dc.wait_converged(timeout=30)
    with trio.fail_after(30):
        for region in dc.sim.regions:
            while (await dc.db.get_subcloud(region)).initial_sync_state != c.INITIAL_SYNC_COMPLETED:  # noqa: ASYNC110
                await trio.sleep(0.05)
        while await dc.db.count_requests_by_state():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_master_dbsync_outage_times_work_out_within_its_budget_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with open_dcorch(outage_settings(), ephemeral_ports=True) as dc:
        assert dc.sim is not None
        regions = dc.sim.regions
        await wait_enabled(dc)
        faults = f"{dc.sim.endpoints.control}/master/faults/dcdbsync"
        assert (await dc.client.put(faults, json={"offline": True})).status_code == 200
        caplog.clear()

        lost = await create_user(dc, "lost")  # keystone is up: the proxy answers 201
        timed_out: dict[str, float] = {}
        # region -> seconds from the request's creation to its final state (its own row)
        with trio.fail_after(BUDGET + SLACK + 5):
            while len(timed_out) < len(regions):
                for region in regions:
                    if region in timed_out:
                        continue
                    for row in await requests_for(dc, region, lost, c.ORCH_REQUEST_TIMED_OUT):
                        age = datetime.fromisoformat(row["updated_at"]) - datetime.fromisoformat(
                            row["created_at"]
                        )
                        timed_out[region] = age.total_seconds()
                await trio.sleep(0.05)
        assert min(timed_out.values()) >= BUDGET, timed_out
        assert max(timed_out.values()) <= BUDGET + SLACK, timed_out
        for region in regions:
            assert lost not in dc.sim.subcloud(region).identity.users
            assert await requests_for(dc, region, lost, c.ORCH_REQUEST_QUEUED) == []
            assert await requests_for(dc, region, lost, c.ORCH_REQUEST_IN_PROGRESS) == []

        # A master outage, not a subcloud one: nothing says a subcloud is unreachable.
        assert messages(caplog, "sync.unreachable") == []
        for region in regions:
            view = (await dc.client.get(api(dc, f"/{region}"), headers=dc.auth)).json()
            assert view["subcloud"]["availability_status"] == c.AVAILABILITY_ONLINE

        health = await dc.client.get(f"{dc.api_url}/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        dbsync = health.json()["master"]["dependencies"]["dbsync"]
        assert dbsync["status"] == "down"
        assert dbsync["url"] == dc.sim.endpoints.master_dcdbsync
        assert dbsync["failed_url"].startswith(dc.sim.endpoints.master_dcdbsync + "/identity/")
        assert dbsync["reason"] == "RemoteProtocolError"
        assert health.json()["master"]["dependencies"]["keystone"]["status"] == "up"

        scraped = (await dc.client.get(f"{dc.api_url}/metrics")).text
        assert metric(scraped, "dcorch_master_up", dependency="dbsync") == 0.0
        assert metric(scraped, "dcorch_master_up", dependency="keystone") == 1.0
        failures = metric(scraped, "dcorch_master_failures_total", dependency="dbsync")
        assert failures is not None
        # The subclouds' first calls share one fetch (one job), then one probe per backoff step
        # (0.2 s doubling to 0.5 s) while work is pending: 12 at most by the time of this
        # scrape. Retrying each pair at offline_retry_interval, as an unreachable subcloud is,
        # would cost about 6 x 7 = 42.
        assert 1 <= failures <= 12, failures

        # The master comes back before the next change's budget is spent: the work completes.
        created = trio.current_time()
        kept = await create_user(dc, "kept")
        await trio.sleep(0.5)
        assert (await dc.client.delete(faults)).status_code == 200
        with trio.fail_after(BUDGET + SLACK):
            while not all(kept in dc.sim.subcloud(r).identity.users for r in regions):  # noqa: ASYNC110
                await trio.sleep(0.05)
        recovered_in = trio.current_time() - created
        assert recovered_in < BUDGET
        with trio.fail_after(5):
            for region in regions:
                while await requests_for(dc, region, kept, c.ORCH_REQUEST_IN_PROGRESS):  # noqa: ASYNC110
                    await trio.sleep(0.05)
        for region in regions:
            for state in (c.ORCH_REQUEST_QUEUED, c.ORCH_REQUEST_TIMED_OUT):
                assert await requests_for(dc, region, kept, state) == []

        # The pairs that timed work out are audited once the master is back: the audit queues
        # the lost change again (it would otherwise wait for engine.audit_interval, 20 min).
        await dc.wait_converged(timeout=15)
        for region in regions:
            assert lost in dc.sim.subcloud(region).identity.users

        down = messages(caplog, "master.down")
        assert len(down) == 1, down
        assert down[0].startswith(
            f"master.down dependency=dbsync url={dc.sim.endpoints.master_dcdbsync}/identity/"
        )
        up = messages(caplog, "master.up")
        assert len(up) == 1, up
        assert up[0].startswith(
            f"master.up dependency=dbsync url={dc.sim.endpoints.master_dcdbsync}"
        )

        health = await dc.client.get(f"{dc.api_url}/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        scraped = (await dc.client.get(f"{dc.api_url}/metrics")).text
        assert metric(scraped, "dcorch_master_up", dependency="dbsync") == 1.0
        print(
            f"\nmaster DB-sync outage, {SUBCLOUDS} subclouds, budget {BUDGET:.0f} s: timed out "
            f"after {min(timed_out.values()):.2f}-{max(timed_out.values()):.2f} s, "
            f"{failures:.0f} calls to the master during the outage, work created 0.5 s before "
            f"the recovery applied everywhere {recovered_in:.2f} s after its creation"
        )


async def test_initial_sync_failure_names_the_endpoint_and_later_work_says_it_reached_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with open_dcorch(outage_settings(2), ephemeral_ports=True, register=False) as dc:
        assert dc.sim is not None
        first, second = dc.sim.regions
        faults = f"{dc.sim.endpoints.control}/master/faults/dcdbsync"
        assert (await dc.client.put(faults, json={"offline": True})).status_code == 200
        # Added through the v1 API, as a new user would.
        for region in (first, second):
            added = await dc.client.post(
                api(dc), json={"subcloud": region, "management_ip": "10.0.0.9"}, headers=dc.auth
            )
            assert added.status_code == 200, added.text
            managed = await dc.client.put(
                api(dc, f"/{region}"),
                json={"management_state": "managed", "availability_status": "online"},
                headers=dc.auth,
            )
            assert managed.status_code == 200, managed.text

        async def initial_sync(region: str) -> dict[str, Any]:
            view = await dc.client.get(api(dc, f"/{region}/initial-sync"), headers=dc.auth)
            assert view.status_code == 200, view.text
            body: dict[str, Any] = view.json()
            return body

        async def wait_for(region: str, master_dependency: str | None) -> dict[str, Any]:
            """The region's last initial sync error once it is one of ``master_dependency``'s."""
            with trio.fail_after(15):
                while True:
                    error = (await initial_sync(region))["last_error"]
                    if error is not None and error["master_dependency"] == master_dependency:
                        return dict(error)
                    await trio.sleep(0.05)

        error = await wait_for(first, "dbsync")
        assert error["url"].startswith(dc.sim.endpoints.master_dcdbsync + "/identity/")
        assert error["url"] in error["error"]
        assert (await initial_sync(first))["initial_sync_state"] != c.INITIAL_SYNC_COMPLETED
        [line, *_] = [m for m in messages(caplog, "initial_sync.failed") if first in m]
        assert f"url={error['url']}" in line

        # Work recorded now reaches no subcloud (none finished its initial sync): said, counted.
        await create_user(dc, "nobody-gets-this")
        [said] = messages(caplog, "dispatcher.no_eligible_targets")
        assert said.startswith(
            "dispatcher.no_eligible_targets endpoint=identity resource=users operation=post"
        )
        scraped = (await dc.client.get(f"{dc.api_url}/metrics")).text
        assert "# TYPE dcorch_work_orders_untargeted_total counter" in scraped
        untargeted = metric(
            scraped,
            "dcorch_work_orders_untargeted_total",
            endpoint_type="identity",
            resource_type="users",
            operation="post",
        )
        assert untargeted == 1.0

        # The master is back; now the second subcloud's own services are down.
        dc.sim.set_faults(second, offline=True)
        assert (await dc.client.delete(faults)).status_code == 200
        error = await wait_for(second, None)
        assert error["url"].startswith(dc.sim.endpoints.subcloud_root(second) + "/")
        with trio.fail_after(15):
            while (await initial_sync(first))["last_error"] is not None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await initial_sync(first))["initial_sync_state"] == c.INITIAL_SYNC_COMPLETED
