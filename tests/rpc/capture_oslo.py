"""Record what the real oslo.messaging rabbit driver puts on the wire (run in the oslo venv).

A tool, not a test: ``$(scripts/oslo-venv)/bin/python tests/rpc/capture_oslo.py`` writes
tests/rpc/fixtures/*.json, the messages the codec's unit tests decode (docs/rpc.md). It never
reads the library's code: a real ``RPCServer`` and ``RPCClient`` talk through the broker while a
spy queue, bound to the same exchanges, keeps a copy of each request, and a spy reply queue
(named in a hand-made call) receives what the real server answers.

Each fixture is ``{"what", "exchange", "routing_key", "properties", "body"}`` with the body as
the exact text the broker delivered.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import amqp
import oslo_messaging
from oslo_config import cfg

URL = "rabbit://guest:guest@127.0.0.1:5672/"
EXCHANGE = "capture-exchange"
OUT = Path(__file__).resolve().parent / "fixtures"


class Endpoint:
    """The server's methods: an echo, a refusal (a builtin exception) and a silent cast target."""

    def echo(self, ctxt: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"ctxt": ctxt, "kwargs": kwargs}

    def boom(self, ctxt: dict[str, Any], **kwargs: Any) -> None:
        raise ValueError("the value is bad")

    def nothing(self, ctxt: dict[str, Any], **kwargs: Any) -> None:
        return None

    def record(self, ctxt: dict[str, Any], **kwargs: Any) -> None:
        return None

    def slow(self, ctxt: dict[str, Any], **kwargs: Any) -> str:
        time.sleep(1.6)
        return "done"


def _get(channel: amqp.Channel, queue: str, timeout: float = 5.0) -> amqp.Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = channel.basic_get(queue, no_ack=True)
        if message is not None:
            return message
        time.sleep(0.01)
    raise TimeoutError(f"nothing arrived on {queue}")


def _fixture(what: str, message: amqp.Message) -> dict[str, Any]:
    info = message.delivery_info
    properties = {k: v for k, v in message.properties.items() if k not in ("application_headers",)}
    properties["headers"] = message.properties.get("application_headers")
    body = message.body.decode() if isinstance(message.body, bytes) else message.body
    return {
        "what": what,
        "exchange": info["exchange"],
        "routing_key": info["routing_key"],
        "redelivered": info["redelivered"],
        "properties": properties,
        "body": body,
    }


def main() -> int:
    cfg.CONF([])
    oslo_messaging.set_transport_defaults(EXCHANGE)
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=URL)
    topic = f"capture-{uuid.uuid4().hex[:8]}"
    server = oslo_messaging.get_rpc_server(
        transport,
        oslo_messaging.Target(topic=topic, server="host-a"),
        [Endpoint()],
        executor="threading",
    )
    server.start()
    spy_conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    spy_conn.connect()
    spy = spy_conn.channel()
    time.sleep(0.3)  # the server has declared its exchanges
    requests = f"spy-requests-{topic}"
    spy.queue_declare(requests, auto_delete=True)
    spy.queue_bind(requests, EXCHANGE, topic)
    spy.queue_bind(requests, EXCHANGE, f"{topic}.host-a")
    spy.queue_bind(requests, f"{topic}_fanout", "")
    replies = f"spy-replies-{topic}"
    spy.queue_declare(replies, auto_delete=True)
    fixtures: list[dict[str, Any]] = []
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=7)
    ctxt = {"user": "dcmanager", "project": "admin", "is_admin": True, "request_id": "req-1"}

    client.call(ctxt, "echo", subcloud_name="subcloud1", sw_version="24.09")
    fixtures.append(_fixture("client-call", _get(spy, requests)))
    client.prepare(version="1.0", call_monitor_timeout=5).call(ctxt, "echo", x=1)
    fixtures.append(_fixture("client-call-versioned", _get(spy, requests)))
    client.cast(ctxt, "record", subcloud_name="subcloud1", count=3)
    fixtures.append(_fixture("client-cast", _get(spy, requests)))
    client.prepare(server="host-a").cast({}, "record", x=1)
    fixtures.append(_fixture("client-cast-server", _get(spy, requests)))
    client.prepare(fanout=True).cast({}, "record", x=2)
    fixtures.append(_fixture("client-cast-fanout", _get(spy, requests)))

    # Hand-made calls whose reply queue is the spy's: what the real server answers.
    template = json.loads(json.loads(fixtures[0]["body"])["oslo.message"])
    for what, method, args in (
        ("server-reply", "echo", {"a": 1}),
        ("server-reply-none", "nothing", {}),
        ("server-failure", "boom", {}),
        ("server-no-such-method", "nosuch", {}),
        ("server-bad-arguments", "echo", None),
        ("server-reply-monitored", "slow", {}),
    ):
        message = dict(template, method=method, args=args, _reply_q=replies)
        if method == "slow":
            message["_timeout"] = 1  # the call monitor: the server says it is still working
        message["_msg_id"] = uuid.uuid4().hex
        message["_unique_id"] = uuid.uuid4().hex
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})
        spy.basic_publish(
            amqp.Message(body, content_type="application/json", content_encoding="utf-8"),
            exchange=EXCHANGE,
            routing_key=topic,
        )
        _get(spy, requests)  # the spy's own copy of the request
        fixtures.append(_fixture(what, _get(spy, replies)))
        for n in range(1, 4):
            try:
                fixtures.append(_fixture(f"{what}-{n}", _get(spy, replies, timeout=2.0)))
            except TimeoutError:
                break
    server.stop()
    server.wait()
    spy.queue_delete(requests)
    spy.queue_delete(replies)
    spy_conn.close()
    transport.cleanup()
    OUT.mkdir(exist_ok=True)
    for fixture in fixtures:
        (OUT / f"{fixture['what']}.json").write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"wrote {len(fixtures)} fixtures to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
