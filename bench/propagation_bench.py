"""Time for one work order to reach every one of N simulated subclouds over HTTP.

    .venv/bin/python -m bench.propagation_bench [N]
    BENCH_SEEDED=1 .venv/bin/python -m bench.propagation_bench [N]   # skip the initial syncs

Wires the simulator, a fresh SQLite database, the dispatcher and the sync manager in one trio
process, manages N subclouds (initial sync and enable-time audits are not timed), then creates
one user on the master, submits its work order and measures until every subcloud has the user.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from dcorch import constants as c
from dcorch.db import migrate, open_database
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.engine.dispatcher import Dispatcher
from dcorch.engine.endpoints import MasterEndpoints, SimResolver
from dcorch.engine.http import Credentials, HttpSession
from dcorch.engine.sync_manager import SyncManager
from dcorch.settings import ActorSettings, DispatcherSettings, EngineSettings
from dcorch.sim import open_sim_cloud
from dcorch.work import WorkOrder


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'dcorch.db'}"
        await trio.to_thread.run_sync(migrate.upgrade, url)
        async with (
            open_sim_cloud(subclouds=count, port=0) as sim,
            open_database(url) as db,
            httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=200)) as client,
            trio.open_nursery() as nursery,
        ):
            settings = EngineSettings()
            http = HttpSession(
                client,
                Credentials(sim.admin.username, sim.admin.password, sim.admin.project_name),
                settings.subcloud_http_timeout,
            )
            dispatcher = Dispatcher(db, DispatcherSettings())
            manager = SyncManager(
                db,
                settings,
                actor_settings=ActorSettings(),
                http=http,
                resolver=SimResolver(sim.endpoints),
                master=MasterEndpoints.for_sim(sim.endpoints),
                sink=dispatcher.submit,
                rng=random.Random(1),
            )
            dispatcher.set_commit_listener(manager.on_commit)
            await nursery.start(dispatcher.run)
            t0 = time.perf_counter()
            if SEEDED:
                # Registered as already synced (the simulator's subclouds start equal to the
                # master): start-up then costs one enable-time audit per pair, no initial sync.
                await db.run(seed_eligible_subclouds, list(sim.regions))
            await nursery.start(manager.run)
            for region in [] if SEEDED else sim.regions:
                await db.add_subcloud(region, software_version="24.09", management_ip="10.0.0.1")
                await db.update_subcloud_states(
                    region,
                    management_state=c.MANAGEMENT_MANAGED,
                    availability_status=c.AVAILABILITY_ONLINE,
                )
                await manager.subcloud_changed(region)
            added = time.perf_counter()
            await sim.wait_converged(
                timeout=600, poll_interval=0.5, ignore=["fernet_repo"] if SEEDED else ()
            )
            converged = time.perf_counter()
            while any(  # noqa: ASYNC110 - bench polling of in-process state
                sim.latest_status(r, c.ENDPOINT_TYPE_IDENTITY) != "in-sync" for r in sim.regions
            ):
                await trio.sleep(0.5)
            await trio.sleep(2)
            print(f"managed + initial sync of {count} subclouds: {time.perf_counter() - t0:.1f} s")
            print(
                f"  (API calls for all subclouds returned at {added - t0:.1f} s, subclouds equal "
                f"to the master at {converged - t0:.1f} s, then waited for every in-sync report)"
            )
            token = sim.admin_token()
            response = await client.post(
                f"{sim.endpoints.master_keystone}/users",
                headers={"X-Auth-Token": token},
                json={"user": {"name": "bench-user", "password": "x", "domain_id": "default"}},
            )
            uid = response.json()["user"]["id"]
            order = WorkOrder(c.ENDPOINT_TYPE_IDENTITY, c.RESOURCE_USERS, uid, c.OPERATION_POST)
            start = time.perf_counter()
            await dispatcher.submit([order])
            committed = time.perf_counter()
            remaining = set(sim.regions)
            while remaining:
                remaining = {r for r in remaining if uid not in sim.subcloud(r).identity.users}
                await trio.sleep(0.01)
            done = time.perf_counter()
            print(f"work order committed in {1000 * (committed - start):.1f} ms")
            print(f"one work order reached all {count} subclouds in {done - start:.2f} s")
            if manager.grouped is not None:
                print(f"  engine database group commit: {manager.grouped.statistics}")
            nursery.cancel_scope.cancel()


SEEDED = os.environ.get("BENCH_SEEDED", "") == "1"

if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
