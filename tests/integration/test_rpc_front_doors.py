"""``rpc.front_doors`` without a broker: dcorch starts, says so once, and shows it in /health.

No RabbitMQ here (the transport URL points at a closed port): the end-to-end test with the
broker and the real oslo peer is tests/rpc/test_dcmanager_end_to_end.py.
"""

from __future__ import annotations

import json
import logging

import pytest
import trio

from dcorch import constants as c
from dcorch.harness import open_dcorch
from tests.conftest import harness_settings
from tests.integration.test_master_outage import api, metric

NO_BROKER = "rabbit://dcorch:s3cret-pw@127.0.0.1:1/"
"""Port 1: connection refused at once."""


async def test_both_front_doors_without_a_broker_start_and_report_degraded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = harness_settings(
        subclouds=1,
        rpc={"transport_url": NO_BROKER, "front_doors": "both", "reconnect_backoff_max": 2.0},
        engine={"request_retry_backoff": 0.05, "request_retry_backoff_max": 0.2},
    )
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        assert dc.sim is not None
        assert dc.rpc is not None
        assert dc.rpc.outbox is not None
        # The HTTP front door still drives the lifecycle (harness registration, the v1 API) and
        # the engine syncs; its status reports wait for the broker instead of being lost.
        await dc.wait_converged(timeout=30)
        [region] = dc.sim.regions
        added = await dc.client.post(
            api(dc),
            json={"subcloud": "added-by-http", "management_ip": "10.0.0.9"},
            headers=dc.auth,
        )
        assert added.status_code == 200, added.text
        waiting = {
            (region, c.ENDPOINT_TYPE_IDENTITY, c.SYNC_STATUS_IN_SYNC),
            (region, c.ENDPOINT_TYPE_PLATFORM, c.SYNC_STATUS_IN_SYNC),
        }
        with trio.fail_after(10):
            while {(r.region, r.endpoint_type, r.status) for r in dc.rpc.outbox.waiting()} != (  # noqa: ASYNC110
                waiting
            ):
                await trio.sleep(0.05)
        # Not delivered, so not recorded as reported.
        rows = await dc.db.list_subcloud_syncs(region)
        assert {s.sync_status_reported for s in rows} == {c.SYNC_STATUS_NONE}

        health = await dc.client.get(f"{dc.api_url}/health")
        assert health.status_code == 200  # restarting dcorch would not bring the broker
        body = health.json()
        assert body["status"] == "degraded"
        assert body["broker"]["status"] == "down"
        assert body["broker"]["url"] == "rabbit://dcorch:***@127.0.0.1:1/"
        assert set(body["broker"]["links"]) == {"server", "caster"}
        assert not body["broker"]["links"]["server"]["connected"]
        scraped = (await dc.client.get(f"{dc.api_url}/metrics")).text
        assert metric(scraped, "dcorch_rpc_broker_up", link="server") == 0.0
        assert metric(scraped, "dcorch_rpc_broker_up", link="caster") == 0.0
        assert metric(scraped, "dcorch_status_outbox_waiting") == 2.0
        tree = dc.system.snapshot()
        links = [n for n in tree.children if n.name in ("rpc-server", "rpc-caster")]
        assert [(n.name, n.restarts) for n in links] == [("rpc-caster", 0), ("rpc-server", 0)]

    logged = [r.getMessage() for r in caplog.records]
    said = [m for m in logged if m.startswith("rpc.broker_unreachable ")]
    assert len(said) == 2  # once per link, at start-up, however often it retried
    assert "url=rabbit://dcorch:***@127.0.0.1:1/" in said[0]
    assert "keeps running and retries" in said[0]
    assert [m for m in logged if m.startswith("rpc.on ")] != []
    assert all("s3cret-pw" not in m for m in logged)
    assert "s3cret-pw" not in json.dumps(body)


async def test_http_front_door_is_the_default_and_needs_no_broker() -> None:
    async with open_dcorch(harness_settings(subclouds=1), ephemeral_ports=True) as dc:
        assert dc.rpc is None
        await dc.wait_converged(timeout=30)
        body = (await dc.client.get(f"{dc.api_url}/health")).json()
        assert "broker" not in body
        assert dc.sim is not None
        [region] = dc.sim.regions
        with trio.fail_after(10):  # reported to the simulator's dcmanager REST API
            while dc.sim.status_reports(region, c.ENDPOINT_TYPE_IDENTITY) == []:  # noqa: ASYNC110
                await trio.sleep(0.05)
