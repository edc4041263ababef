"""The real oslo.messaging as a test peer: run in the oslo venv, driven by JSON lines on stdin.

Started by tests/rpc/peer.py (``$(scripts/oslo-venv)/bin/python tests/rpc/oslo_peer.py URL``).
Each stdin line is one command ``{"id": n, "op": ..., ...}``; each answer is one stdout line
``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "exc_class", "exc_module", "message"}``.
Calls run on a thread pool, so several may be in flight; answers come as they finish.

Ops:
- ``call`` / ``cast``: ``exchange, topic, method, args, ctxt, timeout, server, fanout``, with
  an oslo ``RPCClient`` (``call`` answers ``result``);
- ``calls``: ``n`` calls with ``concurrency`` threads (``vary``: ``{arg: "text{i}"}`` gives
  call ``i`` its own value); answers every result or error and the median and each round-trip
  time in ms;
- ``serve``: an oslo ``RPCServer`` on ``exchange, topic, server`` whose endpoint records every
  call or cast it gets; ``received`` answers them in arrival order (``method, ctxt, args``);
- ``stop_server``, ``exit``.

A control exchange is the transport's, so each exchange gets its own transport (made after
``set_transport_defaults``), as in an upstream process that talks to dcorch and dcmanager.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import oslo_messaging
from oslo_config import cfg

_write = threading.Lock()
_transports: dict[str, Any] = {}
_servers: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
ALLOWED_EXMODS = ["dcorch_test_exceptions"]


def _send(message: dict[str, Any]) -> None:
    line = json.dumps(message, default=str)
    with _write:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _transport(url: str, exchange: str) -> Any:
    if exchange not in _transports:
        oslo_messaging.set_transport_defaults(exchange)
        _transports[exchange] = oslo_messaging.get_rpc_transport(
            cfg.CONF, url=url, allowed_remote_exmods=ALLOWED_EXMODS
        )
    return _transports[exchange]


def _client(url: str, command: dict[str, Any]) -> Any:
    transport = _transport(url, command["exchange"])
    client = oslo_messaging.get_rpc_client(
        transport,
        oslo_messaging.Target(topic=command["topic"]),
        timeout=command.get("timeout", 10),
    )
    if command.get("server") or command.get("fanout"):
        client = client.prepare(server=command.get("server"), fanout=command.get("fanout"))
    return client


def _error(exc: BaseException) -> dict[str, Any]:
    answer = {
        "ok": False,
        "exc_class": type(exc).__name__,
        "exc_module": type(exc).__module__,
        "message": str(exc),
    }
    if isinstance(exc, oslo_messaging.RemoteError):
        answer["remote_type"] = exc.exc_type
        answer["remote_value"] = exc.value
    return answer


class _Recorder:
    """An endpoint that records every call or cast it gets and returns None."""

    def __init__(self, log: list[dict[str, Any]]) -> None:
        self._log = log

    def _record(self, name: str, ctxt: dict[str, Any], kwargs: dict[str, Any]) -> None:
        self._log.append({"method": name, "ctxt": ctxt, "args": kwargs})

    def update_subcloud_endpoint_status(self, ctxt: dict[str, Any], **kwargs: Any) -> None:
        self._record("update_subcloud_endpoint_status", ctxt, kwargs)

    def record(self, ctxt: dict[str, Any], **kwargs: Any) -> None:
        self._record("record", ctxt, kwargs)


def _call(url: str, command: dict[str, Any]) -> dict[str, Any]:
    client = _client(url, command)
    try:
        result = client.call(command.get("ctxt") or {}, command["method"], **command["args"])
    except Exception as exc:
        return _error(exc)
    return {"ok": True, "result": result}


def _calls(url: str, command: dict[str, Any]) -> dict[str, Any]:
    client = _client(url, command)
    ctxt = command.get("ctxt") or {}

    def one(i: int) -> tuple[float, dict[str, Any]]:
        args = dict(command["args"], n=i) if command.get("number") else dict(command["args"])
        for name, template in (command.get("vary") or {}).items():
            args[name] = template.format(i=i)
        started = time.perf_counter()
        try:
            outcome = {"ok": True, "result": client.call(ctxt, command["method"], **args)}
        except Exception as exc:
            outcome = _error(exc)
        return (time.perf_counter() - started) * 1000, outcome

    with ThreadPoolExecutor(command.get("concurrency", 1)) as pool:
        done = list(pool.map(one, range(command["n"])))
    times = [t for t, _ in done]
    return {
        "ok": True,
        "outcomes": [o for _, o in done],
        "ms": times,
        "median_ms": statistics.median(times),
    }


def _serve(url: str, command: dict[str, Any]) -> dict[str, Any]:
    log: list[dict[str, Any]] = []
    server = oslo_messaging.get_rpc_server(
        _transport(url, command["exchange"]),
        oslo_messaging.Target(topic=command["topic"], server=command.get("server", "peer")),
        [_Recorder(log)],
        executor="threading",
    )
    server.start()
    _servers[command["topic"]] = (server, log)
    return {"ok": True}


def _run(url: str, command: dict[str, Any]) -> None:
    op = command["op"]
    try:
        if op == "call":
            answer = _call(url, command)
        elif op == "calls":
            answer = _calls(url, command)
        elif op == "cast":
            _client(url, command).cast(
                command.get("ctxt") or {}, command["method"], **command["args"]
            )
            answer = {"ok": True}
        elif op == "serve":
            answer = _serve(url, command)
        elif op == "received":
            answer = {"ok": True, "received": list(_servers[command["topic"]][1])}
        elif op == "stop_server":
            server, _ = _servers.pop(command["topic"])
            server.stop()
            server.wait()
            answer = {"ok": True}
        else:
            answer = {"ok": False, "exc_class": "ValueError", "message": f"unknown op {op}"}
    except Exception as exc:
        answer = _error(exc)
    _send({"id": command["id"], **answer})


def main() -> int:
    url = sys.argv[1]
    cfg.CONF([])
    pool = ThreadPoolExecutor(32)
    _send({"id": 0, "ok": True, "ready": True, "version": oslo_messaging.__name__})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            break
        if command["op"] in ("call", "calls"):
            pool.submit(_run, url, command)
        else:
            _run(url, command)
    pool.shutdown(wait=True)
    for server, _ in _servers.values():
        server.stop()
        server.wait()
    for transport in _transports.values():
        transport.cleanup()
    _send({"id": -1, "ok": True, "bye": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
