"""dcmanager drives dcorch over RabbitMQ: the real oslo.messaging as dcmanager, end to end.

dcorch runs through the harness with ``rpc.front_doors = "rpc"`` and simulated subclouds that
are *not* registered: the real oslo ``RPCClient`` (tests/rpc/peer.py) adds, manages, takes
offline and deletes them on the worker topic, and a real oslo ``RPCServer`` on the
dcmanager-state topic receives dcorch's ``update_subcloud_endpoint_status`` casts. Each test has
its own exchanges and topics (``names``) and deletes its queues (``cleanup``).

Checked: upstream's replies (None) and refusals (the class dcmanager's client sees); the casts'
keyword arguments, per-pair order and de-duplication while dcorch syncs the simulated subclouds
(initial sync in-sync per pair; a change proxied while a subcloud is unreachable out-of-sync,
then in-sync after it is back, each once); the v1 API only reads; ``/health`` and ``/metrics``
show the broker; a malformed message is rejected with a log line and the consumer goes on; the
broker closing both connections under load loses no call and no status.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from dcorch import constants as c
from dcorch.harness import Dcorch, open_dcorch
from dcorch.rpc.amqp import open_connection
from dcorch.rpc.server import message_properties
from dcorch.rpc.wire import envelope, new_id
from dcorch.settings import Settings
from tests.conftest import harness_settings
from tests.reliability.conftest import pg_database  # noqa: F401 - fixture
from tests.rpc.peer import URL, OsloPeer, PeerAnswer
from tests.rpc.support import close_from_broker, rabbitmqctl_usable, wait_connected, wait_until

pytestmark = [pytest.mark.rabbitmq]

IN, OUT = c.SYNC_STATUS_IN_SYNC, c.SYNC_STATUS_OUT_OF_SYNC
IDENTITY, PLATFORM = c.ENDPOINT_TYPE_IDENTITY, c.ENDPOINT_TYPE_PLATFORM
STATUS_METHOD = "update_subcloud_endpoint_status"


def rpc_settings(names: dict[str, str], subclouds: int, database_url: str = "") -> Settings:
    """The harness with dcmanager's RPC as the only lifecycle front door, fast retries."""
    base = harness_settings(
        subclouds=subclouds,
        engine={
            "offline_retry_interval": 0.5,
            "safety_sweep_interval": 2.0,
            "subcloud_http_timeout": 2.0,
            "request_retry_backoff": 0.05,
            "request_retry_backoff_max": 0.5,
        },
        rpc={
            "transport_url": URL,
            "control_exchange": names["exchange"],
            "dcmanager_exchange": names["dcmanager_exchange"],
            "worker_topic": names["topic"],
            "server": names["server"],
            "dcmanager_state_topic": names["state_topic"],
            "front_doors": "rpc",
            "reconnect_backoff": 0.05,
            "reconnect_backoff_max": 0.5,
            "confirm_timeout": 5.0,
        },
    )
    return base.replace(database={"url": database_url}) if database_url else base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))


@asynccontextmanager
async def dcorch_and_dcmanager(
    oslo_peer: OsloPeer, names: dict[str, str], cleanup: list[str], settings: Settings
) -> AsyncIterator[Dcorch]:
    """dcmanager's state server first (its queue takes the casts), then dcorch, connected."""
    await oslo_peer.serve(names["dcmanager_exchange"], names["state_topic"])
    async with open_dcorch(settings, ephemeral_ports=True, register=False) as dc:
        assert dc.rpc is not None
        assert dc.rpc.caster is not None
        cleanup.append(dc.rpc.server.queues.fanout_queue)
        await wait_connected(dc.rpc.server.state)
        await wait_connected(dc.rpc.caster.state)
        yield dc
        await oslo_peer.stop_server(names["state_topic"])


class Dcmanager:
    """dcmanager as the tests see it: its oslo client's calls and the casts its server got."""

    def __init__(self, peer: OsloPeer, names: dict[str, str]) -> None:
        self.peer = peer
        self.exchange, self.topic = names["exchange"], names["topic"]
        self.state_topic = names["state_topic"]

    async def call(self, method: str, **kwargs: Any) -> PeerAnswer:
        ctxt = {"request_id": f"req-{new_id()}", "user": "dcmanager", "is_admin": True}
        return await self.peer.call(self.exchange, self.topic, method, ctxt=ctxt, **kwargs)

    async def ok(self, method: str, **kwargs: Any) -> None:
        answer = await self.call(method, **kwargs)
        assert answer.ok, answer
        assert answer.result is None  # upstream's EngineWorkerService replies nothing

    async def casts(self) -> list[dict[str, Any]]:
        received = await self.peer.received(self.state_topic)
        assert {r["method"] for r in received} <= {STATUS_METHOD}, received
        return [r["args"] for r in received]

    async def by_pair(self) -> dict[tuple[str, str], list[str]]:
        """Each pair's statuses in the order they arrived."""
        found: dict[tuple[str, str], list[str]] = defaultdict(list)
        for args in await self.casts():
            found[(args["subcloud_region"], args["endpoint_type"])].append(args["sync_status"])
        return dict(found)

    async def until(self, predicate: Any, within: float = 30.0) -> dict[tuple[str, str], list[str]]:
        """Poll the casts received until ``predicate(by_pair)`` holds."""
        with trio.fail_after(within):
            while True:
                pairs = await self.by_pair()
                if predicate(pairs):
                    return pairs
                await trio.sleep(0.05)


async def manage(dcm: Dcmanager, regions: list[str]) -> None:
    """What dcmanager does for a new subcloud: add it, then managed and online."""
    for region in regions:
        await dcm.ok(
            "add_subcloud", subcloud_name=region, sw_version="24.09", management_ip="127.0.0.1"
        )
        await dcm.ok(
            "update_subcloud_states",
            subcloud_name=region,
            management_state="managed",
            availability_status="online",
        )


async def create_user(dc: Dcorch, name: str) -> str:
    body = {"user": {"name": name, "password": f"{name}-pw-1", "domain_id": "default"}}
    response = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert response.status_code == 201, response.text
    return str(response.json()["user"]["id"])


def metric(body: str, name: str, **labels: str) -> float | None:
    for line in body.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        if dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")) == labels:
            return float(match.group(3))
    return None


def every_pair_in(regions: list[str]) -> Any:
    return lambda pairs: all(
        pairs.get((r, e), [])[-1:] == [IN] for r in regions for e in (IDENTITY, PLATFORM)
    )


async def test_dcmanager_drives_the_lifecycle_and_receives_status_casts(
    oslo_peer: OsloPeer,
    names: dict[str, str],
    cleanup: list[str],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = rpc_settings(names, subclouds=3, database_url=database_url)
    async with dcorch_and_dcmanager(oslo_peer, names, cleanup, settings) as dc:
        assert dc.sim is not None
        assert dc.sync_manager is not None
        dcm = Dcmanager(oslo_peer, names)
        regions = list(dc.sim.regions)
        assert await dc.db.list_subclouds() == []  # nothing registered but through RPC

        # Added and managed by dcmanager: initial syncs, then one in-sync per pair.
        await manage(dcm, regions)
        await dcm.until(every_pair_in(regions))
        await dc.wait_converged(regions, timeout=30)
        for args in await dcm.casts():
            assert set(args) == {
                "subcloud_name",
                "subcloud_region",
                "endpoint_type",
                "sync_status",
                "alarmable",
            }
            assert args["subcloud_name"] is None
            assert args["alarmable"] is False  # in-sync: nothing to alarm about
        # De-duplicated: more passes with nothing new cast nothing more.
        for region in regions:
            await dc.sync_manager.sync_now(region)
        assert await dcm.by_pair() == {(r, e): [IN] for r in regions for e in (IDENTITY, PLATFORM)}
        # Deliveries are recorded in batches after the casts (docs/behaviour.md): wait for them.
        with trio.fail_after(10):
            while True:
                rows = {
                    (s.subcloud_name, s.endpoint_type): s for s in await dc.db.list_subcloud_syncs()
                }
                reported = {p: row.sync_status_reported for p, row in rows.items()}
                if len(rows) == 2 * len(regions) and reported == dict.fromkeys(rows, IN):
                    break
                await trio.sleep(0.05)

        # Refusals, re-raised by dcmanager's client (neither module is one it may import, so
        # it is oslo's RemoteError naming upstream's class); nothing changed.
        duplicate = await dcm.call(
            "add_subcloud", subcloud_name=regions[0], sw_version="24.09", management_ip="127.0.0.1"
        )
        assert (duplicate.ok, duplicate.exc_class) == (False, "RemoteError"), duplicate
        assert duplicate.fields["remote_type"] == "DBDuplicateEntry"
        unknown = await dcm.call("del_subcloud", subcloud_name="no-such-region")
        assert unknown.fields["remote_type"] == "SubcloudNotFound"
        assert unknown.fields["remote_value"] == "Subcloud no-such-region not found"
        bad = await dcm.call("update_subcloud_states", subcloud_name=regions[0])
        assert (bad.exc_class, bad.exc_module) == ("TypeError", "builtins")
        assert sorted(s.region_name for s in await dc.db.list_subclouds()) == sorted(regions)

        # The v1 API reads, and refuses changes: dcmanager drives the lifecycle.
        api = f"{dc.api_url}/v1.0/admin/subclouds"
        listed = await dc.client.get(api, headers=dc.auth)
        assert listed.status_code == 200
        assert len(listed.json()["subclouds"]) == len(regions)
        refused = await dc.client.post(api, json={"subcloud": "via-http"}, headers=dc.auth)
        assert refused.status_code == 405, refused.text
        assert refused.json()["error"] == "method_not_allowed"
        assert "rpc.front_doors" in refused.json()["detail"]
        assert refused.headers["allow"] == "GET, HEAD, OPTIONS"
        assert (await dc.client.delete(f"{api}/{regions[0]}", headers=dc.auth)).status_code == 405
        health = (await dc.client.get(f"{dc.api_url}/health")).json()
        assert health["status"] == "ok"
        assert health["broker"]["status"] == "up"
        assert "guest:guest" not in json.dumps(health)
        scraped = (await dc.client.get(f"{dc.api_url}/metrics")).text
        assert metric(scraped, "dcorch_rpc_broker_up", link="server") == 1.0
        assert metric(scraped, "dcorch_rpc_broker_up", link="caster") == 1.0

        # A change proxied while a subcloud is unreachable: out-of-sync, then in-sync once it
        # is back, each reported once; the other pairs stay in sync and say nothing new.
        unreachable, offline, deleted = regions
        dc.sim.set_faults(unreachable, offline=True)
        uid = await create_user(dc, "during-outage")
        await dcm.until(lambda p: p[(unreachable, IDENTITY)] == [IN, OUT])
        [out] = [a for a in await dcm.casts() if a["sync_status"] == OUT]
        assert out == {
            "subcloud_name": None,
            "subcloud_region": unreachable,
            "endpoint_type": IDENTITY,
            "sync_status": OUT,
            "alarmable": True,
        }
        dc.sim.clear_faults(unreachable)
        await dcm.until(lambda p: p[(unreachable, IDENTITY)] == [IN, OUT, IN])
        await dc.wait_converged(regions, timeout=30)
        assert uid in dc.sim.subcloud(unreachable).identity.users

        # Taken offline by dcmanager: no cast (dcmanager marks it unknown itself); online
        # again: a fresh initial sync re-announces each pair once.
        await dcm.ok(
            "update_subcloud_states",
            subcloud_name=offline,
            management_state=None,
            availability_status="offline",
        )
        row = await dc.db.get_subcloud(offline)
        assert row.availability_status == c.AVAILABILITY_OFFLINE
        await dcm.ok(
            "update_subcloud_states",
            subcloud_name=offline,
            management_state=None,
            availability_status="online",
        )
        await dcm.until(
            lambda p: p[(offline, PLATFORM)] == [IN, IN] and p[(offline, IDENTITY)] == [IN, IN]
        )

        # Deleted by dcmanager: gone from the database and the engine.
        await dcm.ok("del_subcloud", subcloud_name=deleted)
        assert deleted not in dc.sync_manager.regions()
        assert sorted(s.region_name for s in await dc.db.list_subclouds()) == sorted(
            [unreachable, offline]
        )
        final = await dcm.by_pair()
        assert final == {
            (unreachable, IDENTITY): [IN, OUT, IN],
            (unreachable, PLATFORM): [IN],
            (offline, IDENTITY): [IN, IN],
            (offline, PLATFORM): [IN, IN],
            (deleted, IDENTITY): [IN],
            (deleted, PLATFORM): [IN],
        }

        # A malformed message on the worker topic: rejected with a log line, the consumer
        # goes on serving dcmanager.
        assert dc.rpc is not None
        async with open_connection(dc.rpc.config.address) as connection:
            channel = await connection.channel()
            for body in (b"{not json", envelope({"method": "add_subcloud", "args": [1]})):
                await channel.publish(names["exchange"], names["topic"], body, message_properties())
        await wait_until(
            lambda: (
                len([r for r in caplog.records if r.getMessage().startswith("rpc.rejected ")]) == 2
            )
        )
        await dcm.ok("update_subcloud_version", subcloud_name=offline, sw_version="25.03")
        assert (await dc.db.get_subcloud(offline)).software_version == "25.03"


async def test_broker_closing_both_connections_under_load_loses_no_call_and_no_status(
    oslo_peer: OsloPeer, names: dict[str, str], cleanup: list[str]
) -> None:
    """dcmanager adds 200 subclouds (8 threads) while 8 simulated ones sync and announce; the
    broker closes dcorch's server and caster connections mid-way: every call is answered once,
    every subcloud is added once, every pair's in-sync reaches dcmanager."""
    assert rabbitmqctl_usable(), "rabbitmqctl must be usable to close a connection broker-side"
    settings = rpc_settings(names, subclouds=8)
    async with dcorch_and_dcmanager(oslo_peer, names, cleanup, settings) as dc:
        assert dc.sim is not None
        assert dc.rpc is not None
        assert dc.rpc.caster is not None
        dcm = Dcmanager(oslo_peer, names)
        regions = list(dc.sim.regions)
        server, caster = dc.rpc.server, dc.rpc.caster
        total = 200
        outcome: dict[str, Any] = {}

        async def load() -> None:
            answer = await oslo_peer.calls(
                names["exchange"],
                names["topic"],
                "add_subcloud",
                total,
                concurrency=8,
                vary={"subcloud_name": "load-{i}"},
                sw_version="24.09",
                management_ip="127.0.0.1",
            )
            outcome.update(answer.fields)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            nursery.start_soon(manage, dcm, regions)
            await wait_until(lambda: server.applied >= total // 3, 30)
            before = await dcm.until(lambda p: len(p) >= 2)  # casts are flowing
            applied_at_cut = server.applied
            assert await close_from_broker(server.link.name) == 1
            assert await close_from_broker(caster.link.name) == 1
            await wait_connected(server.state, connects=2)
            await wait_connected(caster.state, connects=2)

        # The cut fell inside the load: calls and status casts on both sides of it.
        assert applied_at_cut < total + 2 * len(regions)
        assert len(before) < 2 * len(regions)
        outcomes = outcome["outcomes"]
        assert [o for o in outcomes if not o["ok"] or o["result"] is not None] == []
        added = {s.region_name for s in await dc.db.list_subclouds()}
        assert added == {f"load-{i}" for i in range(total)} | set(regions)
        pairs = await dcm.until(every_pair_in(regions))
        for region in regions:
            for ept in (IDENTITY, PLATFORM):
                # once; twice only for the cast in flight when the caster's connection went
                assert pairs[(region, ept)] in ([IN], [IN, IN]), (region, ept, pairs)
        assert sum(len(v) for v in pairs.values()) <= 2 * len(regions) + 1
        assert "CONNECTION_FORCED" in str(server.state.last_error)
        assert "CONNECTION_FORCED" in str(caster.state.last_error)
