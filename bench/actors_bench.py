"""Actor runtime micro-benchmarks: memory per idle actor and ask round-trips per second.

    .venv/bin/python -m bench.actors_bench [--actors 10000] [--seconds 2.0] [--askers 100]

Memory is the growth of the resident set (from /proc/self/statm) while N idle actors
run, divided by N; it includes each actor's task, mailbox, node and ref.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import trio

from actors import Actor, ActorRef, ActorSpec, SupervisorSpec, open_actor_system


class Idle(Actor[int, int]):
    async def handle(self, message: int) -> int:
        return message


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


async def memory_per_actor(count: int) -> float:
    async with open_actor_system(SupervisorSpec(name="idle")) as system:
        supervisor = system.lookup_supervisor("idle")
        gc.collect()
        before = rss_bytes()
        for n in range(count):
            await supervisor.start_child(ActorSpec(name=f"a{n}", factory=Idle))
        gc.collect()
        after = rss_bytes()
    return (after - before) / count


async def asks_per_second(ref: ActorRef[int, int], seconds: float, askers: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def asker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await ref.ask(1)
            done += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(askers):
            nursery.start_soon(asker)
    return done / (time.perf_counter() - started)


async def main(count: int, seconds: float, askers: int) -> None:
    per_actor = await memory_per_actor(count)
    print(
        f"memory per idle actor: {per_actor:,.0f} bytes ({per_actor / 1024:.2f} KiB) over {count:,}"
    )
    async with open_actor_system(ActorSpec(name="echo", factory=Idle, mailbox_size=128)) as system:
        ref = system.lookup("echo")
        sequential = await asks_per_second(ref, seconds, 1)
        print(f"ask round-trips/s, 1 asker: {sequential:,.0f}")
        concurrent = await asks_per_second(ref, seconds, askers)
        print(f"ask round-trips/s, {askers} concurrent askers: {concurrent:,.0f}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--askers", type=int, default=100)
    args = parser.parse_args()
    trio.run(main, args.actors, args.seconds, args.askers)


if __name__ == "__main__":
    cli()
