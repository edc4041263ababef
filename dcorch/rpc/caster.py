"""Casts to another service's topic (dcmanager's state topic), confirmed by the broker.

A cast is published ``mandatory`` on the target's control exchange with routing key ``topic``:
:meth:`RpcCaster.cast` returns once the broker confirmed it and routed it to a queue, and raises
:class:`~dcorch.rpc.contract.CastUndeliverable` when there is no connection, the broker refuses
it, no queue is bound for the topic (dcmanager never started), or the confirm does not come in
``confirm_timeout``. The caller (the status reporter) decides when to try again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import trio

from dcorch.rpc.amqp import AmqpError, Channel, Connection, Unroutable
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.contract import CastUndeliverable, Context
from dcorch.rpc.link import BrokerLink, BrokerState
from dcorch.rpc.server import message_properties
from dcorch.rpc.topology import declare_control_exchange
from dcorch.rpc.wire import encode_request

logger = logging.getLogger(__name__)

API_VERSION = "1.0"
"""The ``version`` upstream's RPC clients put in every message (their BASE_RPC_API_VERSION)."""


class RpcCaster:
    """The :class:`~dcorch.rpc.contract.Caster` over RabbitMQ; run :meth:`run` as a task.

    Args:
        config: the ``[rpc]`` settings.
        exchange: the target service's control exchange (default ``config.dcmanager_exchange``).
        rng: jitter of the reconnect backoff.
    """

    def __init__(
        self,
        config: RpcConfig,
        *,
        exchange: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._exchange = exchange or config.dcmanager_exchange
        self._timeout = config.confirm_timeout
        self.link = BrokerLink(
            config.address,
            name=f"dcorch-rpc-caster:{self._exchange}",
            heartbeat=config.heartbeat,
            connect_timeout=config.connect_timeout,
            backoff=config.reconnect_backoff,
            backoff_max=config.reconnect_backoff_max,
            rng=rng,
        )
        self._channel: Channel | None = None
        self.sent = 0

    @property
    def state(self) -> BrokerState:
        return self.link.state

    async def run(
        self, *, task_status: trio.TaskStatus[BrokerState] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a connection for casting until cancelled; started at once."""
        task_status.started(self.state)
        await self.link.run(self._session)

    async def _session(self, connection: Connection, ready: Callable[[], None]) -> None:
        channel = await connection.channel()
        await declare_control_exchange(channel, self._exchange)
        self._channel = channel
        ready()
        try:
            await trio.sleep_forever()
        finally:
            self._channel = None

    async def cast(
        self,
        topic: str,
        method: str,
        kwargs: Mapping[str, Any],
        *,
        ctxt: Context | None = None,
    ) -> None:
        """Publish ``method(**kwargs)`` to ``topic``; return once the broker has it.

        Raises:
            CastUndeliverable: no connection, refused, unroutable or unconfirmed (the message
                says which; the broker URL in it has no password).
        """
        channel = self._channel
        if channel is None:
            raise CastUndeliverable(
                f"no connection to the broker {self.state.url}: {self.state.last_error}"
            )
        body = encode_request(method, kwargs, ctxt=ctxt, version=API_VERSION)
        try:
            with trio.fail_after(self._timeout):
                await channel.publish(
                    self._exchange, topic, body, message_properties(), mandatory=True
                )
        except Unroutable:
            raise CastUndeliverable(
                f"no queue is bound for topic {topic} on exchange {self._exchange}"
            ) from None
        except AmqpError as exc:
            raise CastUndeliverable(f"the broker did not take the cast: {exc}") from None
        except trio.TooSlowError:
            raise CastUndeliverable(
                f"the broker did not confirm the cast within {self._timeout:g} s"
            ) from None
        self.sent += 1
