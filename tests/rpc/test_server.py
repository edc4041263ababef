"""RpcServer on the real broker, fed hand-made messages: malformed, duplicated, redelivered."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from dcorch.rpc.amqp import Channel, Delivery, open_connection
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.server import message_properties
from dcorch.rpc.wire import decode_reply, encode_request, envelope, new_id
from tests.rpc.support import TestEndpoint, close_from_broker, running_server, wait_until

pytestmark = [pytest.mark.rabbitmq]


@asynccontextmanager
async def raw_client(config: RpcConfig, reply_queue: str) -> AsyncIterator[Channel]:
    """A channel with its own reply queue: calls whose every byte the test chooses."""
    async with open_connection(config.address) as connection:
        channel = await connection.channel(delivery_buffer=64)
        await channel.queue_declare(reply_queue, auto_delete=True)
        await channel.qos(64)
        await channel.consume(reply_queue)
        yield channel


async def publish(channel: Channel, config: RpcConfig, body: bytes | str) -> None:
    data = body.encode() if isinstance(body, str) else body
    await channel.publish(config.control_exchange, config.worker_topic, data, message_properties())


async def next_reply(channel: Channel) -> Delivery:
    with trio.fail_after(10):
        delivery = await channel.deliveries.receive()
    await channel.ack(delivery.delivery_tag)
    return delivery


async def test_malformed_messages_are_rejected_once_and_the_consumer_goes_on(
    rpc_config: RpcConfig, caplog: pytest.LogCaptureFixture, cleanup: list[str]
) -> None:
    caplog.set_level(logging.INFO, logger="dcorch.rpc")
    endpoint = TestEndpoint()
    replies = f"{rpc_config.worker_topic}-replies"
    async with (
        running_server(endpoint, rpc_config) as server,
        raw_client(rpc_config, replies) as client,
    ):
        cleanup.append(server.queues.fanout_queue)
        for body in (
            b"{not json",
            json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps({"args": {}})}),
            envelope({"method": "record", "args": [1], "_unique_id": new_id()}),
            encode_request("no_such_cast", {"a": 1}),
        ):
            await publish(client, rpc_config, body)
        # a call to an unknown method is answered with oslo's failure, then rejected
        msg_id = new_id()
        await publish(
            client,
            rpc_config,
            encode_request("nothing_here", {}, msg_id=msg_id, reply_q=replies),
        )
        failure = decode_reply((await next_reply(client)).body)
        assert failure.msg_id == msg_id
        assert failure.failure is not None
        assert failure.failure["class"] == "NoSuchMethod"
        # ... and the consumer still serves a good call
        await publish(
            client, rpc_config, encode_request("echo", {"a": 1}, msg_id=new_id(), reply_q=replies)
        )
        assert decode_reply((await next_reply(client)).body).result == {
            "ctxt": {},
            "kwargs": {"a": 1},
        }
        await trio.sleep(0.3)  # a requeued message would come back and be logged again
        rejected = [r.getMessage() for r in caplog.records if "rpc.rejected" in r.getMessage()]
        assert len(rejected) == 5, "\n".join(rejected)
        for reason in (
            "body is not JSON",
            "reason=no method",
            "args of record is a JSON list",
            "method=no_such_cast call=False reason=Endpoint does not support RPC method",
            "method=nothing_here call=True",
        ):
            assert sum(reason in line for line in rejected) == 1, (reason, rejected)
        assert server.applied == 1


async def test_a_duplicate_call_is_applied_once_and_answered_twice_alike(
    rpc_config: RpcConfig, cleanup: list[str]
) -> None:
    endpoint = TestEndpoint()
    replies = f"{rpc_config.worker_topic}-replies"
    async with (
        running_server(endpoint, rpc_config) as server,
        raw_client(rpc_config, replies) as client,
    ):
        cleanup.append(server.queues.fanout_queue)
        body = encode_request(
            "count", {"n": 7, "pause": 0.2}, msg_id=new_id(), reply_q=replies, unique_id=new_id()
        )
        await publish(client, rpc_config, body)
        await publish(client, rpc_config, body)  # while the first is still running
        first, second = await next_reply(client), await next_reply(client)
        await publish(client, rpc_config, body)  # and once it is done
        third = await next_reply(client)
        results = [decode_reply(d.body) for d in (first, second, third)]
        assert [r.result for r in results] == [7, 7, 7]
        assert len({r.msg_id for r in results}) == 1
        assert endpoint.counts[7] == 1
        assert server.applied == 1


async def test_a_call_redelivered_after_the_connection_dropped_is_not_applied_twice(
    rpc_config: RpcConfig, cleanup: list[str]
) -> None:
    """The broker closes the server's connection while a handler runs: the handler finishes,
    the broker redelivers the call, and the remembered reply answers it."""
    endpoint = TestEndpoint()
    replies = f"{rpc_config.worker_topic}-replies"
    async with (
        running_server(endpoint, rpc_config) as server,
        raw_client(rpc_config, replies) as client,
    ):
        cleanup.append(server.queues.fanout_queue)
        msg_id = new_id()
        body = encode_request("count", {"n": 1, "pause": 2.5}, msg_id=msg_id, reply_q=replies)
        await publish(client, rpc_config, body)
        await wait_until(lambda: len(server._recent) == 1)
        assert await close_from_broker(server.link.name) == 1
        assert endpoint.counts[1] == 0, "the handler was to be still running"
        reply = decode_reply((await next_reply(client)).body)
        assert (reply.msg_id, reply.result) == (msg_id, 1)
        assert endpoint.counts[1] == 1
        assert server.state.connects == 2
        with trio.move_on_after(0.3):
            extra = await client.deliveries.receive()
            pytest.fail(f"a second reply came: {extra}")
