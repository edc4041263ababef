"""Shared pieces of the RPC tests: a tiny Endpoint, a running server, a broker-side close."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from dcorch.rpc.config import RpcConfig
from dcorch.rpc.contract import Context, Handler, RpcFailure
from dcorch.rpc.link import BrokerState
from dcorch.rpc.server import RpcServer


class TestEndpoint:
    """echo / refuse (RpcFailure) / crash (a bug) / slow / record (casts) / count (load)."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.counts: Counter[int] = Counter()

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "echo": self.echo,
            "refuse": self.refuse,
            "crash": self.crash,
            "slow": self.slow,
            "record": self.record,
            "count": self.count,
        }

    async def echo(self, ctxt: Context, **kwargs: Any) -> dict[str, Any]:
        return {"ctxt": dict(ctxt), "kwargs": kwargs}

    async def refuse(self, ctxt: Context, *, name: str, module: str = "builtins") -> None:
        kind = "ValueError" if module == "builtins" else "SubcloudNotFound"
        raise RpcFailure(kind, module, f"Subcloud {name} not found")

    async def crash(self, ctxt: Context) -> None:
        raise KeyError("password=hunter2 at db 10.0.0.1")

    async def slow(self, ctxt: Context, *, seconds: float) -> str:
        await trio.sleep(seconds)
        return "done"

    async def record(self, ctxt: Context, **kwargs: Any) -> None:
        self.recorded.append((str(ctxt.get("request_id")), kwargs))

    async def count(self, ctxt: Context, *, n: int, pause: float = 0.0) -> int:
        if pause:
            await trio.sleep(pause)
        self.counts[n] += 1
        return n


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    """Poll a condition another task or the broker makes true (no event to wait on there)."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def wait_connected(state: BrokerState, *, connects: int = 1) -> None:
    await wait_until(lambda: state.connected and state.connects >= connects)


@asynccontextmanager
async def running_server(
    endpoint: Any, config: RpcConfig, **kwargs: Any
) -> AsyncIterator[RpcServer]:
    """An RpcServer serving ``endpoint``, connected and consuming, stopped after the block."""
    server = RpcServer(endpoint, config, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await wait_connected(server.state)
        yield server
        nursery.cancel_scope.cancel()


def rabbitmqctl_usable() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    done = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid"], capture_output=True, check=False
    )
    return done.returncode == 0


async def close_from_broker(connection_name: str) -> int:
    """Make the broker close every connection named ``connection_name`` (rabbitmqctl)."""
    listing = await trio.run_process(
        ["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid", "client_properties"],
        capture_stdout=True,
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.stdout.decode().splitlines()
        if f'"connection_name","{connection_name}"' in line
    ]
    for pid in pids:
        await trio.run_process(["rabbitmqctl", "-q", "close_connection", pid, "test closes it"])
    return len(pids)
