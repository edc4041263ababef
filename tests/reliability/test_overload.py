"""Overload: more concurrent clients than the dispatcher's mailbox holds.

The dispatcher mailbox holds 4 submissions, a batch takes at most 2, and a caller waits at most
0.2 s for room; 60 clients then submit at once, far more than that. Promises checked:

* the excess gets ``503`` with a ``Retry-After`` header, never a hang or a 5xx of another kind;
* the mailbox never holds more than its capacity (sampled every 5 ms all along);
* the process's RSS grows by less than 128 MiB during the storm (the 60 in-process httpx
  clients included);
* afterwards new commands succeed, and every 2xx is committed (its orch_job exists).
"""

from __future__ import annotations

import os

import httpx
import psutil
import pytest
import trio

from dcorch.harness import Dcorch, open_dcorch

from .conftest import fast_settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CLIENTS = 60
PER_CLIENT = 5
MAILBOX = 4


async def _jobs_for(dc: Dcorch, master_ids: list[str]) -> set[str]:
    from sqlalchemy import Connection, select

    from dcorch.db.schema import orch_job

    def read(conn: Connection) -> set[str]:
        rows = conn.execute(select(orch_job.c.source_resource_id))
        return {r[0] for r in rows} & set(master_ids)

    return await dc.db.run_readonly(read)


async def test_overload_answers_503_with_retry_after_and_recovers() -> None:
    settings = fast_settings(
        subclouds=2,
        dispatcher={"mailbox_size": MAILBOX, "enqueue_timeout": 0.2, "max_batch": 2},
    )
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        await dc.wait_converged(timeout=30)
        process = psutil.Process(os.getpid())
        rss_before = process.memory_info().rss
        statuses: dict[int, int] = {}
        acknowledged: list[str] = []
        peak = 0
        retry_after: set[str] = set()

        async def client(n: int) -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                for i in range(PER_CLIENT):
                    name = f"o{n}-{i}"
                    response = await http.post(
                        dc.identity_url + "/v3/users",
                        json={"user": {"name": name, "password": "pw-" + name}},
                        headers=dc.auth,
                    )
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 201:
                        acknowledged.append(response.json()["user"]["id"])
                    elif response.status_code == 503:
                        retry_after.add(response.headers.get("Retry-After", ""))

        async def sample(done: trio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, dc.db.dispatcher.orders_queued)
                await trio.sleep(0.005)

        done = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(sample, done)
            async with trio.open_nursery() as nursery:
                for n in range(CLIENTS):
                    nursery.start_soon(client, n)
            done.set()
        rss_growth = process.memory_info().rss - rss_before

        assert set(statuses) <= {201, 503}, statuses
        assert statuses.get(503, 0) > 0, f"no overload reached: {statuses}"
        assert retry_after == {"1"}, retry_after
        assert peak <= MAILBOX
        assert rss_growth < 128 * 1024 * 1024, rss_growth
        assert await _jobs_for(dc, acknowledged) == set(acknowledged)

        after = await dc.client.post(
            dc.identity_url + "/v3/users",
            json={"user": {"name": "after-storm", "password": "pw-after"}},
            headers=dc.auth,
        )
        assert after.status_code == 201
        assert await _jobs_for(dc, [after.json()["user"]["id"]])
        print(
            f"\noverload: {CLIENTS * PER_CLIENT} commands from {CLIENTS} clients, statuses "
            f"{statuses}, mailbox peak {peak}/{MAILBOX}, RSS growth {rss_growth / 2**20:.1f} MiB, "
            f"{len(acknowledged)} acknowledged all committed, recovery command 201"
        )
