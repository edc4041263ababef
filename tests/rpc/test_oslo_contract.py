"""The contract with the real oslo.messaging 18.3.1 as the peer, over the machine's RabbitMQ.

A real oslo ``RPCClient`` (dcmanager's library) calls and casts to our RpcServer; a real oslo
``RPCServer`` receives our RpcCaster's casts. Each test has its own exchanges and topics
(``names``) and deletes its queues (``cleanup``).
"""

from __future__ import annotations

import logging
import time

import pytest
import trio

from dcorch.rpc.caster import RpcCaster
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.contract import CastUndeliverable
from tests.rpc.peer import OsloPeer
from tests.rpc.support import TestEndpoint, running_server, wait_connected, wait_until

pytestmark = [pytest.mark.rabbitmq]


async def test_oslo_client_calls_our_server(
    oslo_peer: OsloPeer, rpc_config: RpcConfig, names: dict[str, str], cleanup: list[str]
) -> None:
    endpoint = TestEndpoint()
    exchange, topic = names["exchange"], names["topic"]
    async with running_server(endpoint, rpc_config) as server:
        cleanup.append(server.queues.fanout_queue)
        ctxt = {"user": "dcmanager", "project": "admin", "is_admin": True, "request_id": "req-7"}
        echo = await oslo_peer.call(exchange, topic, "echo", ctxt=ctxt, subcloud_name="subcloud1")
        assert echo.ok, echo
        assert echo.result == {"ctxt": ctxt, "kwargs": {"subcloud_name": "subcloud1"}}

        # An RpcFailure of a module the client may import is re-raised as that class ...
        refused = await oslo_peer.call(exchange, topic, "refuse", name="subcloud9")
        assert (refused.ok, refused.exc_class, refused.exc_module) == (
            False,
            "ValueError",
            "builtins",
        )
        # oslo appends "\n" and the traceback (empty: we send none) to the text
        assert refused.message == "Subcloud subcloud9 not found\n"
        # ... one it may not import as oslo's RemoteError naming it.
        remote = await oslo_peer.call(
            exchange, topic, "refuse", name="subcloud9", module="dcorch.common.exceptions"
        )
        assert (remote.exc_class, remote.exc_module) == ("RemoteError", "oslo_messaging.rpc.client")
        assert remote.fields["remote_type"] == "SubcloudNotFound"
        assert remote.fields["remote_value"] == "Subcloud subcloud9 not found"

        # A handler's bug: its class comes back, its text (internals) does not.
        crash = await oslo_peer.call(exchange, topic, "crash")
        assert (crash.exc_class, crash.exc_module) == ("KeyError", "builtins")
        assert "hunter2" not in crash.message
        assert "10.0.0.1" not in crash.message
        assert "internal error" in crash.message

        # An unknown method: the failure the real server sends (NoSuchMethod, as RemoteError).
        unknown = await oslo_peer.call(exchange, topic, "no_such_method", x=1)
        assert (unknown.exc_class, unknown.fields["remote_type"]) == ("RemoteError", "NoSuchMethod")
        assert (
            unknown.fields["remote_value"] == "Endpoint does not support RPC method no_such_method"
        )

        # Arguments the handler does not take: TypeError, as oslo's dispatcher raises.
        bad = await oslo_peer.call(exchange, topic, "refuse", nom="x")
        assert (bad.exc_class, bad.exc_module) == ("TypeError", "builtins")

        # The topic.<server> queue and the fanout queue are served too.
        direct = await oslo_peer.call(exchange, topic, "echo", server=names["server"], via="server")
        assert direct.result["kwargs"] == {"via": "server"}
        for how in ("topic", "server", "fanout"):
            answer = await oslo_peer.cast(
                exchange,
                topic,
                "record",
                ctxt={"request_id": how},
                server=names["server"] if how == "server" else None,
                fanout=how == "fanout",
                how=how,
            )
            assert answer.ok, answer
        await wait_until(lambda: len(endpoint.recorded) == 3)
        assert sorted(endpoint.recorded) == [
            ("fanout", {"how": "fanout"}),
            ("server", {"how": "server"}),
            ("topic", {"how": "topic"}),
        ]
        # One applied handler per message: 5 calls (refusals and the crash included) and 3
        # casts; the unknown method and the bad arguments never reached a handler.
        assert server.applied == 8


async def test_round_trip_time_of_a_call(
    oslo_peer: OsloPeer, rpc_config: RpcConfig, names: dict[str, str], cleanup: list[str]
) -> None:
    """The median of 100 calls from the real client through our server (printed for the notes)."""
    async with running_server(TestEndpoint(), rpc_config) as server:
        cleanup.append(server.queues.fanout_queue)
        await oslo_peer.call(names["exchange"], names["topic"], "count", n=-1)  # warm-up
        answer = await oslo_peer.calls(names["exchange"], names["topic"], "count", 100, number=True)
        outcomes = answer.fields["outcomes"]
        assert [o["result"] for o in outcomes] == list(range(100))
        median = answer.fields["median_ms"]
        print(f"\nrpc: call round trip through RpcServer from oslo 18.3.1: median {median:.2f} ms")
        assert median < 100


async def test_our_casts_reach_a_real_oslo_server_in_order(
    oslo_peer: OsloPeer, rpc_config: RpcConfig, names: dict[str, str], cleanup: list[str]
) -> None:
    exchange, topic = names["dcmanager_exchange"], names["state_topic"]
    caster = RpcCaster(rpc_config)
    with pytest.raises(
        CastUndeliverable, match="no connection to the broker rabbit://guest:\\*\\*\\*@"
    ):
        await caster.cast(topic, "update_subcloud_endpoint_status", {})
    async with trio.open_nursery() as nursery:
        await nursery.start(caster.run)
        await wait_connected(caster.state)
        # nobody serves the topic yet: the broker routes the cast nowhere, and we say so
        with pytest.raises(CastUndeliverable, match="no queue is bound for topic"):
            await caster.cast(topic, "update_subcloud_endpoint_status", {"n": -1})
        await oslo_peer.serve(exchange, topic)
        ctxt = {"request_id": "req-status", "is_admin": True}
        total = 1000
        started = time.perf_counter()
        for n in range(total):
            await caster.cast(
                topic,
                "update_subcloud_endpoint_status",
                {
                    "subcloud_name": f"subcloud{n % 50}",
                    "subcloud_region": f"region{n % 50}",
                    "endpoint_type": "identity",
                    "sync_status": "in-sync" if n % 2 else "out-of-sync",
                    "n": n,
                },
                ctxt=ctxt,
            )
        confirmed = time.perf_counter() - started
        received: list[dict[str, object]] = []
        with trio.fail_after(30):
            while len(received) < total:
                await trio.sleep(0.05)
                received = await oslo_peer.received(topic)
        delivered = time.perf_counter() - started
        print(
            f"\nrpc: {total} casts confirmed in {confirmed:.2f} s ({total / confirmed:.0f}/s), "
            f"all received by the oslo server in {delivered:.2f} s ({total / delivered:.0f}/s)"
        )
        assert [r["args"]["n"] for r in received] == list(range(total))  # type: ignore[index]
        first = received[0]
        assert first["method"] == "update_subcloud_endpoint_status"
        assert first["ctxt"] == {**ctxt, "client_timeout": None}
        assert first["args"] == {
            "subcloud_name": "subcloud0",
            "subcloud_region": "region0",
            "endpoint_type": "identity",
            "sync_status": "out-of-sync",
            "n": 0,
        }
        assert caster.sent == total
        await oslo_peer.stop_server(topic)
        nursery.cancel_scope.cancel()


async def test_broker_closing_the_connection_under_load_loses_no_call(
    oslo_peer: OsloPeer,
    rpc_config: RpcConfig,
    names: dict[str, str],
    cleanup: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker drops our server's connection twice during 300 calls: each is answered once
    with its own result, each handler ran once, and the server is back consuming."""
    from tests.rpc.support import close_from_broker, rabbitmqctl_usable

    assert rabbitmqctl_usable(), "rabbitmqctl must be usable to close a connection broker-side"
    caplog.set_level(logging.INFO, logger="dcorch.rpc")
    endpoint = TestEndpoint()
    exchange, topic = names["exchange"], names["topic"]
    async with running_server(endpoint, rpc_config) as server:
        cleanup.append(server.queues.fanout_queue)
        total = 300
        outcome: dict[str, object] = {}

        async def load() -> None:
            answer = await oslo_peer.calls(
                exchange, topic, "count", total, concurrency=8, number=True, pause=0.005
            )
            outcome.update(answer.fields)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            for cut in (1, 2):
                done = cut * total // 3
                await wait_until(lambda d=done: sum(endpoint.counts.values()) >= d, 30)
                assert await close_from_broker(server.link.name) == 1
                await wait_connected(server.state, connects=cut + 1)
        outcomes = outcome["outcomes"]
        assert isinstance(outcomes, list)
        assert [o.get("result") for o in outcomes] == list(range(total)), [
            o for o in outcomes if not o["ok"]
        ]
        assert set(endpoint.counts) == set(range(total))
        assert max(endpoint.counts.values()) == 1, "a handler ran twice"
        assert server.state.connects == 3
        assert "CONNECTION_FORCED" in str(server.state.last_error)
