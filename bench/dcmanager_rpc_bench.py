"""dcmanager's RPC against the whole dcorch: call round trips and status casts at scale.

    .venv/bin/python -m bench.dcmanager_rpc_bench [--calls 100] [--subclouds 1000]

Needs RabbitMQ at 127.0.0.1:5672 and builds the pinned oslo.messaging venv (scripts/oslo-venv).
dcorch runs through the harness (simulated clouds, SQLite) with ``rpc.front_doors = "both"``;
the real oslo ``RPCClient`` and ``RPCServer`` stand in for dcmanager (tests/rpc/peer.py).

1. ``add_subcloud`` round trip: ``--calls`` sequential calls from the oslo client, each a new
   region (one database commit and an engine wake each); median and p95.
2. Status casts: ``--subclouds`` simulated subclouds registered presynced (their pairs already
   reported in-sync), then one failing request per subcloud written to the database, which
   turns each identity pair out-of-sync: the time until the oslo server has received every
   subcloud's out-of-sync cast, from the write and from the first cast received (this
   includes the engine's 1,000 sync passes; ``outbox_most_waiting`` says whether casts queued);
   then one report per subcloud put straight into the running outbox, timed to the oslo server
   (the outbox and caster alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import trio

from dcorch import constants as c
from dcorch.harness import open_dcorch
from dcorch.rpc.status_outbox import StatusReport
from dcorch.settings import Settings
from dcorch.work import WorkOrder
from tests.rpc.peer import URL, OsloPeer, broker_cleanup, open_oslo_peer


def settings_for(tag: str, subclouds: int) -> Settings:
    return Settings().replace(
        sim={"subclouds": subclouds},
        service={"shutdown_timeout": 10.0},
        engine={"request_retry_backoff": 0.05, "request_retry_backoff_max": 0.5},
        rpc={
            "transport_url": URL,
            "control_exchange": f"bench-{tag}-dcorch",
            "dcmanager_exchange": f"bench-{tag}-dcmanager",
            "worker_topic": f"bench-{tag}-worker",
            "server": f"host-{tag}",
            "dcmanager_state_topic": f"bench-{tag}-state",
            "front_doors": "both",
        },
    )


async def round_trips(peer: OsloPeer, settings: Settings, calls: int) -> dict[str, float]:
    rpc = settings.rpc
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        assert dc.rpc is not None
        while not dc.rpc.server.state.connected:  # noqa: ASYNC110
            await trio.sleep(0.05)
        answer = await peer.calls(
            rpc.control_exchange,
            rpc.worker_topic,
            "add_subcloud",
            calls,
            vary={"subcloud_name": "rtt-{i}"},
            sw_version="24.09",
            management_ip="127.0.0.1",
        )
        failed = [o for o in answer.fields["outcomes"] if not o["ok"]]
        assert not failed, failed[:3]
        times = sorted(answer.fields["ms"])
        assert len(await dc.db.list_subclouds()) == calls
    return {
        "calls": calls,
        "median_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
    }


async def status_casts(peer: OsloPeer, settings: Settings, subclouds: int) -> dict[str, float]:
    rpc = settings.rpc
    await peer.serve(rpc.dcmanager_exchange, rpc.dcmanager_state_topic)
    try:
        async with open_dcorch(settings, ephemeral_ports=True, presynced=True) as dc:
            assert dc.sim is not None
            assert dc.rpc is not None
            assert dc.rpc.caster is not None
            while not dc.rpc.caster.state.connected:  # noqa: ASYNC110
                await trio.sleep(0.05)
            regions = list(dc.sim.regions)
            orders = [
                WorkOrder(
                    c.ENDPOINT_TYPE_IDENTITY,
                    c.RESOURCE_USERS,
                    "no-such-user",
                    c.OPERATION_POST,
                    json.dumps({}),
                    subcloud=region,
                )
                for region in regions
            ]
            before = len(await peer.received(rpc.dcmanager_state_topic))
            started = time.perf_counter()
            await dc.db.enqueue_work(orders)
            written = time.perf_counter() - started
            first: float | None = None
            most_waiting = 0
            with trio.fail_after(600):
                while True:
                    most_waiting = max(most_waiting, len(dc.rpc.outbox.waiting()))  # type: ignore[union-attr]
                    got = await peer.received(rpc.dcmanager_state_topic)
                    out = {
                        r["args"]["subcloud_region"]
                        for r in got[before:]
                        if r["args"]["sync_status"] == c.SYNC_STATUS_OUT_OF_SYNC
                    }
                    now = time.perf_counter() - started
                    if out and first is None:
                        first = now
                    if out >= set(regions):
                        break
                    await trio.sleep(0.1)
            casts = len(got) - before
            # The outbox and caster alone: one report per subcloud put straight in the outbox
            # (the platform pair, in-sync -> out-of-sync), timed to the oslo server.
            outbox = dc.rpc.outbox
            assert outbox is not None
            before = len(got)
            started = time.perf_counter()
            for region in regions:
                outbox.put(
                    StatusReport(region, c.ENDPOINT_TYPE_PLATFORM, c.SYNC_STATUS_OUT_OF_SYNC, True)
                )
            with trio.fail_after(600):
                while len(await peer.received(rpc.dcmanager_state_topic)) < before + subclouds:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            outbox_s = time.perf_counter() - started
    finally:
        await peer.stop_server(rpc.dcmanager_state_topic)
    assert first is not None
    return {
        "subclouds": subclouds,
        "casts": casts,
        "write_s": written,
        "all_received_s": now,
        "per_s_from_write": subclouds / now,
        "per_s_from_first": subclouds / max(now - first, 1e-9),
        "outbox_most_waiting": most_waiting,
        "outbox_only_s": outbox_s,
        "outbox_only_per_s": subclouds / outbox_s,
    }


async def main(calls: int, subclouds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with open_oslo_peer() as peer:
        for name, count in (("round_trip", calls), ("status_casts", subclouds)):
            tag = uuid.uuid4().hex[:8]
            settings = settings_for(tag, 0 if name == "round_trip" else count)
            rpc = settings.rpc
            try:
                if name == "round_trip":
                    results[name] = await round_trips(peer, settings, count)
                else:
                    results[name] = await status_casts(peer, settings, count)
            finally:
                topic, state = rpc.worker_topic, rpc.dcmanager_state_topic
                await broker_cleanup(
                    [topic, f"{topic}.{rpc.server}", state, f"{state}.peer"],
                    [rpc.control_exchange, rpc.dcmanager_exchange, f"{topic}_fanout"],
                )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--subclouds", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args.calls, args.subclouds), indent=2))
