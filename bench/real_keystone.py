"""Latencies against real Keystones: ``python -m bench.real_keystone [--runs 10]``.

Two figures no simulator can give (issue 12's bench notes), on the system of the end-to-end test
(``tests/realkeystone/system.py``: three Keystone 30 instances, a DB-sync agent beside each,
dcorch with the simulator off; the real peers' fixtures live with the tests, so this imports them):

* **propagation**: from the return of ``openstack --os-region-name SystemController user
  create`` to both subcloud Keystones serving the user (polled every 20 ms);
* **proxy overhead**: ``POST /v3/users`` from Python with an admin token, alternating straight
  to the master Keystone and through dcorch's identity proxy (which also commits the work).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from tests.realkeystone.keystone import KeystoneInstance, stop_all
from tests.realkeystone.system import (
    SUBCLOUDS,
    Clouds,
    System,
    blocking,
    cli,
    open_system,
    start_clouds,
    unique,
)

RESULTS = Path(__file__).resolve().parent / "results"
POLL = 0.02


def summary(samples: list[float]) -> dict[str, float]:
    """Median, p90, min and max in milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "median_ms": round(1000 * statistics.median(ordered), 1),
        "p90_ms": round(1000 * p90, 1),
        "min_ms": round(1000 * ordered[0], 1),
        "max_ms": round(1000 * ordered[-1], 1),
        "n": len(ordered),
    }


async def propagation(system: System, clouds: Clouds, runs: int) -> list[float]:
    """Seconds from the CLI's return to the later of the two subclouds having the user."""
    lags = []
    for _ in range(runs):
        user = await cli(clouds, "user", "create", unique("bench"))
        returned = time.perf_counter()
        pending = set(SUBCLOUDS)
        while pending:
            for name in sorted(pending):
                reply = await system.subcloud(name, "GET", f"/v3/users/{user['id']}")
                if reply.status_code == 200:
                    pending.discard(name)
            if pending:
                await trio.sleep(POLL)
        lags.append(time.perf_counter() - returned)
    return lags


async def overhead(system: System, clouds: Clouds, calls: int) -> dict[str, list[float]]:
    """``POST /v3/users`` latencies, direct and proxied, alternating (same token, same client)."""
    token = await blocking(clouds.master.admin_token)
    headers = {"X-Auth-Token": token}
    targets = {"direct": clouds.master.url, "proxy": system.dc.identity_url}
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(calls):
        for label, base in targets.items():
            body = {"user": {"name": unique("lat"), "domain_id": "default"}}
            started = time.perf_counter()
            reply = await system.dc.client.post(f"{base}/v3/users", json=body, headers=headers)
            times[label].append(time.perf_counter() - started)
            if reply.status_code != 201:
                raise RuntimeError(f"{label} POST /v3/users: {reply.status_code} {reply.text}")
    return times


async def run(runs: int, calls: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dcorch-bench-keystone-"))

    def create(name: str, *, cache: bool) -> KeystoneInstance:
        return KeystoneInstance(root / name, name=name, cache=cache)

    clouds = await blocking(start_clouds, create)
    try:
        async with open_system(clouds) as system:
            lags = await propagation(system, clouds, runs)
            latencies = await overhead(system, clouds, calls)
    finally:
        await blocking(stop_all)
    direct, proxy = summary(latencies["direct"]), summary(latencies["proxy"])
    return {
        "propagation": summary(lags),
        "post_users_direct": direct,
        "post_users_proxy": proxy,
        "proxy_added_median_ms": round(proxy["median_ms"] - direct["median_ms"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="CLI user creates timed")
    parser.add_argument("--calls", type=int, default=30, help="POST /v3/users per target")
    args = parser.parse_args()
    result = trio.run(run, args.runs, args.calls)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_keystone.json").write_text(json.dumps(result, indent=2) + "\n")
    prop, direct, proxy = (
        result["propagation"],
        result["post_users_direct"],
        result["post_users_proxy"],
    )
    print("| figure | median ms | p90 ms | min ms | max ms | n |")
    print("|---|---|---|---|---|---|")
    for label, row in (
        ("CLI return -> both subclouds", prop),
        ("POST /v3/users direct", direct),
        ("POST /v3/users via proxy", proxy),
    ):
        cells = (row["median_ms"], row["p90_ms"], row["min_ms"], row["max_ms"], row["n"])
        print(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    print(f"proxy adds {result['proxy_added_median_ms']} ms (median)")


if __name__ == "__main__":
    main()
