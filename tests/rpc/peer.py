"""Trio-side handle on the real oslo.messaging peer (tests/rpc/oslo_peer.py in its own venv).

Reusable beyond tests/rpc (the end-to-end dcmanager test): ``async with open_oslo_peer() as
peer`` starts the peer process; ``await peer.call(exchange, topic, method, **args)`` makes a real
oslo ``call`` and returns a :class:`PeerAnswer`; ``peer.serve(...)`` starts a real oslo server
and ``peer.received(topic)`` lists what it got. Plus :func:`broker_cleanup`, which deletes a
test's queues and exchanges so parallel runs never share state.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dcorch.rpc.address import parse_transport_url
from dcorch.rpc.amqp import AmqpError, open_connection

URL = "rabbit://guest:guest@127.0.0.1:5672/"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEER = HERE / "oslo_peer.py"
VENV_SCRIPT = ROOT / "scripts" / "oslo-venv"


class OsloUnavailableError(RuntimeError):
    """The oslo.messaging venv could not be built (loud: the tests error, never skip)."""


_venv_lock = threading.Lock()
_venv: Path | OsloUnavailableError | None = None


def oslo_venv() -> Path:
    """The pinned oslo.messaging venv, built by scripts/oslo-venv once per process (blocking)."""
    global _venv
    with _venv_lock:
        if _venv is None:
            done = subprocess.run(
                [sys.executable, str(VENV_SCRIPT)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                _venv = OsloUnavailableError(
                    f"{VENV_SCRIPT} failed ({done.returncode}); it installs "
                    f"tests/rpc/requirements.txt from the package registry:\n{done.stderr[-3000:]}"
                )
            else:
                _venv = Path(done.stdout.strip().splitlines()[-1])
        if isinstance(_venv, OsloUnavailableError):
            raise _venv
        return _venv


@dataclass(frozen=True)
class PeerAnswer:
    """One answer of the peer: ``ok`` with its fields, or the exception the client raised."""

    ok: bool
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        return self.fields.get("result")

    @property
    def exc_class(self) -> str | None:
        return self.fields.get("exc_class")

    @property
    def exc_module(self) -> str | None:
        return self.fields.get("exc_module")

    @property
    def message(self) -> str:
        return str(self.fields.get("message", ""))


class OsloPeer:
    """Commands to the running peer process (see tests/rpc/oslo_peer.py for each op)."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._write = trio.Lock()

    async def _read(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._process.stdout is not None
        buffer = b""
        started = False
        while True:
            chunk = await self._process.stdout.receive_some(65536)
            if not chunk:
                for send in self._waiting.values():
                    send.close()
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                answer = json.loads(line)
                if answer.get("id") == 0 and not started:
                    started = True
                    task_status.started()
                    continue
                if answer["id"] in self._waiting:
                    self._waiting.pop(answer["id"]).send_nowait(answer)

    async def request(self, op: str, *, wait: float = 30.0, **fields: Any) -> PeerAnswer:
        """Send one command and wait for its answer."""
        ident = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[ident] = send
        assert self._process.stdin is not None
        async with self._write:
            line = json.dumps({"id": ident, "op": op, **fields}) + "\n"
            await self._process.stdin.send_all(line.encode())
        with trio.fail_after(wait):
            try:
                answer = await receive.receive()
            except trio.EndOfChannel:
                raise RuntimeError("the oslo peer exited") from None
        ok = bool(answer.pop("ok"))
        answer.pop("id")
        return PeerAnswer(ok, answer)

    async def call(
        self,
        exchange: str,
        topic: str,
        method: str,
        *,
        ctxt: dict[str, Any] | None = None,
        client_timeout: float = 10.0,
        server: str | None = None,
        **args: Any,
    ) -> PeerAnswer:
        """One oslo ``call`` (``client_timeout``: the RPCClient's timeout)."""
        return await self.request(
            "call",
            wait=client_timeout + 5,
            exchange=exchange,
            topic=topic,
            method=method,
            args=args,
            ctxt=ctxt or {},
            server=server,
            timeout=client_timeout,
        )

    async def cast(
        self,
        exchange: str,
        topic: str,
        method: str,
        *,
        ctxt: dict[str, Any] | None = None,
        server: str | None = None,
        fanout: bool = False,
        **args: Any,
    ) -> PeerAnswer:
        return await self.request(
            "cast",
            exchange=exchange,
            topic=topic,
            method=method,
            args=args,
            ctxt=ctxt or {},
            server=server,
            fanout=fanout,
        )

    async def calls(
        self,
        exchange: str,
        topic: str,
        method: str,
        n: int,
        *,
        concurrency: int = 1,
        number: bool = False,
        vary: dict[str, str] | None = None,
        client_timeout: float = 10.0,
        **args: Any,
    ) -> PeerAnswer:
        """``n`` calls from ``concurrency`` threads; ``number`` adds ``n=<i>`` to each call,
        ``vary`` sets each named argument of call ``i`` to ``template.format(i=i)``."""
        return await self.request(
            "calls",
            wait=math.inf,
            timeout=client_timeout,
            exchange=exchange,
            topic=topic,
            method=method,
            args=args,
            n=n,
            concurrency=concurrency,
            number=number,
            vary=vary or {},
        )

    async def serve(self, exchange: str, topic: str, server: str = "peer") -> None:
        answer = await self.request("serve", exchange=exchange, topic=topic, server=server)
        assert answer.ok, answer

    async def received(self, topic: str) -> list[dict[str, Any]]:
        answer = await self.request("received", topic=topic)
        assert answer.ok, answer
        return list(answer.fields["received"])

    async def stop_server(self, topic: str) -> None:
        await self.request("stop_server", topic=topic)


@asynccontextmanager
async def open_oslo_peer(url: str = URL) -> AsyncIterator[OsloPeer]:
    """Start the peer (building the venv if needed), yield it, and stop it afterwards."""
    venv = await trio.to_thread.run_sync(oslo_venv)
    process = await trio.lowlevel.open_process(
        [str(venv / "bin" / "python"), "-W", "ignore", str(PEER), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    peer = OsloPeer(process)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(60):
                await nursery.start(peer._read)
            try:
                yield peer
            finally:
                with trio.move_on_after(10) as scope:
                    scope.shield = True
                    assert process.stdin is not None
                    await process.stdin.send_all(b'{"op": "exit", "id": -1}\n')
                    await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def broker_cleanup(
    queues: Iterable[str] = (), exchanges: Iterable[str] = (), url: str = URL
) -> None:
    """Delete a test's queues and exchanges (absent ones are fine)."""
    with suppress(AmqpError):
        async with open_connection(parse_transport_url(url)) as connection:
            channel = await connection.channel()
            for name in queues:
                await channel.queue_delete(name)
            for name in exchanges:
                await channel.exchange_delete(name)
