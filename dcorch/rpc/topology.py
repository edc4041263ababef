"""The exchanges, queues and bindings an oslo RPC server declares, declared the same way.

RabbitMQ refuses (PRECONDITION_FAILED) a declare whose flags differ from an existing one, so
these match what oslo.messaging 18.3.1 with its defaults declares (docs/rpc.md#topology): a
non-durable topic control exchange; queues ``<topic>`` and ``<topic>.<server>`` bound to it; a
``<topic>_fanout`` exchange (auto-delete) with a per-process ``<topic>_fanout_<uuid>`` queue that
expires half an hour after its consumer went away.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from dcorch.rpc.amqp import Channel

FANOUT_QUEUE_EXPIRES_MS = 1_800_000
"""oslo's ``rabbit_transient_queues_ttl`` (1800 s) as the fanout queue's ``x-expires``."""


async def declare_control_exchange(channel: Channel, exchange: str) -> None:
    """The topic exchange of a service's topics, as every oslo client and server declares it."""
    await channel.exchange_declare(exchange, "topic", durable=False, auto_delete=False)


@dataclass(frozen=True, slots=True)
class ServerQueues:
    """The three queues of one RPC server of ``topic`` named ``server``."""

    exchange: str
    topic: str
    server: str
    fanout_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Fixed for the process: a reconnect consumes the same fanout queue again (if it lives)."""

    @property
    def server_queue(self) -> str:
        return f"{self.topic}.{self.server}"

    @property
    def fanout_exchange(self) -> str:
        return f"{self.topic}_fanout"

    @property
    def fanout_queue(self) -> str:
        return f"{self.topic}_fanout_{self.fanout_id}"

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.topic, self.server_queue, self.fanout_queue)

    async def declare(self, channel: Channel) -> tuple[str, ...]:
        """Declare and bind all three; returns the queues to consume."""
        await declare_control_exchange(channel, self.exchange)
        for queue in (self.topic, self.server_queue):
            await channel.queue_declare(queue, durable=False, auto_delete=False)
            await channel.queue_bind(queue, self.exchange, queue)
        await channel.exchange_declare(
            self.fanout_exchange, "fanout", durable=False, auto_delete=True
        )
        await channel.queue_declare(
            self.fanout_queue, arguments={"x-expires": FANOUT_QUEUE_EXPIRES_MS}
        )
        await channel.queue_bind(self.fanout_queue, self.fanout_exchange, self.topic)
        return self.names
