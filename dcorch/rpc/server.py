"""The RPC server: dcmanager's calls and casts on dcorch's worker topic, handed to an Endpoint.

It consumes the three queues an oslo server of the topic consumes (``<topic>``,
``<topic>.<server>``, the fanout queue) and guarantees, per message (docs/rpc.md#server):

- a call gets exactly one reply on its ``_reply_q``; a cast none;
- a message is acknowledged only after its handler returned (its effect committed) and, for a
  call, the broker confirmed the reply, so a crash or a lost connection in between makes the
  broker deliver it again;
- a message delivered again (same ``_unique_id``) is not applied twice: the remembered reply is
  sent again (:mod:`dcorch.rpc.recent`);
- a malformed message is rejected (not requeued) with one log line saying why, and the consumer
  goes on; a call to an unknown method or with arguments its handler does not take is answered
  with the failure the real oslo server sends, then rejected.

Handlers run in the server's own nursery, not the connection's, so losing the broker never
cancels a handler halfway through its effect: the redelivery waits for it instead.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable, Mapping
from contextlib import suppress

import trio

from dcorch.rpc.amqp import AmqpError, Channel, Connection, Delivery, Properties
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.contract import Endpoint, Handler, RpcFailure
from dcorch.rpc.link import BrokerLink, BrokerState
from dcorch.rpc.recent import Abandoned, Outcome, RecentIds
from dcorch.rpc.topology import ServerQueues
from dcorch.rpc.wire import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    DELIVERY_MODE,
    NO_SUCH_METHOD_CLASS,
    NO_SUCH_METHOD_MODULE,
    Failure,
    MalformedMessage,
    Request,
    decode_request,
    encode_reply,
    new_id,
)

logger = logging.getLogger(__name__)

REPLY_EXCHANGE = ""
"""Replies go through the default exchange straight to the caller's ``reply_<uuid>`` queue."""


def message_properties() -> Properties:
    """The properties oslo puts on every request and reply."""
    return Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=DELIVERY_MODE,
        priority=0,
        headers={},
    )


class RpcServer:
    """Serves one Endpoint on one topic; run :meth:`run` as a supervised task.

    Args:
        endpoint: the handlers (read once per connection, so a restart picks up new ones).
        config: the ``[rpc]`` settings.
        topic: the topic to serve (default ``config.worker_topic``).
        exchange: its exchange (default ``config.control_exchange``).
        rng: jitter of the reconnect backoff (seeded in tests).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        config: RpcConfig,
        *,
        topic: str | None = None,
        exchange: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._config = config
        self.queues = ServerQueues(
            exchange=exchange or config.control_exchange,
            topic=topic or config.worker_topic,
            server=config.server,
        )
        self.link = BrokerLink(
            config.address,
            name=f"dcorch-rpc-server:{self.queues.topic}",
            heartbeat=config.heartbeat,
            connect_timeout=config.connect_timeout,
            backoff=config.reconnect_backoff,
            backoff_max=config.reconnect_backoff_max,
            rng=rng,
        )
        self._recent = RecentIds(config.recent_ids)
        self._handler_nursery: trio.Nursery | None = None
        self.applied = 0
        """Handlers run to completion (a redelivery answered from memory is not counted)."""

    @property
    def state(self) -> BrokerState:
        """The broker state for ``/health`` and ``/metrics``."""
        return self.link.state

    async def run(
        self, *, task_status: trio.TaskStatus[BrokerState] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; started at once (the broker may come later)."""
        async with trio.open_nursery() as handlers:
            self._handler_nursery = handlers
            task_status.started(self.state)
            try:
                await self.link.run(self._session)
            finally:
                self._handler_nursery = None

    async def _session(self, connection: Connection, ready: Callable[[], None]) -> None:
        prefetch = self._config.prefetch
        channel = await connection.channel(delivery_buffer=prefetch)
        await channel.qos(prefetch)
        for queue in await self.queues.declare(channel):
            await channel.consume(queue)
        handlers = dict(self._endpoint.handlers())
        ready()
        logger.info(
            "rpc.serving topic=%s server=%s exchange=%s methods=%d",
            self.queues.topic,
            self.queues.server,
            self.queues.exchange,
            len(handlers),
        )
        async with trio.open_nursery() as deliveries:
            async for delivery in channel.deliveries:
                deliveries.start_soon(self._deliver, channel, handlers, delivery)

    async def _deliver(
        self, channel: Channel, handlers: Mapping[str, Handler], delivery: Delivery
    ) -> None:
        # AmqpError: the connection is gone; the broker delivers the message again
        with suppress(AmqpError):
            await self._handle(channel, handlers, delivery)

    async def _handle(
        self, channel: Channel, handlers: Mapping[str, Handler], delivery: Delivery
    ) -> None:
        tag = delivery.delivery_tag
        try:
            request = decode_request(delivery.body)
        except MalformedMessage as exc:
            self._log_rejected(delivery, str(exc))
            await channel.reject(tag, requeue=False)
            return
        handler = handlers.get(request.method)
        refusal = None
        if handler is None:
            refusal = Failure(
                NO_SUCH_METHOD_CLASS,
                NO_SUCH_METHOD_MODULE,
                f"Endpoint does not support RPC method {request.method}",
            )
        else:
            refusal = _bad_arguments(handler, request)
        if refusal is not None:
            self._log_rejected(delivery, refusal.message, request)
            if request.is_call:
                await self._reply(
                    channel, request, encode_reply(str(request.msg_id), failure=refusal)
                )
            await channel.reject(tag, requeue=False)
            return
        assert handler is not None
        outcome = self._outcome(handler, request, delivery)
        try:
            reply = await outcome.wait()
        except Abandoned:
            await channel.reject(tag, requeue=True)
            return
        if request.is_call:
            assert reply is not None
            await self._reply(channel, request, reply)
        await channel.ack(tag)

    def _outcome(self, handler: Handler, request: Request, delivery: Delivery) -> Outcome:
        """The running or finished handling of this message; starts it if it is new."""
        key = request.unique_id or request.msg_id
        known = self._recent.get(key) if key else None
        if known is not None:
            logger.info(
                "rpc.duplicate method=%s unique_id=%s redelivered=%s answered_from=%s",
                request.method,
                key,
                delivery.redelivered,
                "memory" if known.done else "running handler",
            )
            return known
        outcome = self._recent.start(key) if key else Outcome()
        assert self._handler_nursery is not None
        self._handler_nursery.start_soon(self._apply, handler, request, outcome, key)
        return outcome

    async def _apply(
        self, handler: Handler, request: Request, outcome: Outcome, key: str | None
    ) -> None:
        """Run the handler to its end and remember the reply (or that it did not finish)."""
        try:
            reply = await self._call_handler(handler, request)
        except BaseException:
            outcome.abandon()
            if key:
                self._recent.forget(key, outcome)
            raise
        self.applied += 1
        outcome.finish(reply)

    async def _call_handler(self, handler: Handler, request: Request) -> bytes | None:
        msg_id = request.msg_id
        failure: Failure | None = None
        result = None
        try:
            result = await handler(request.ctxt, **request.args)
        except RpcFailure as exc:
            logger.info(
                "rpc.refused method=%s class=%s message=%s", request.method, exc.exc_class, exc
            )
            failure = Failure.from_rpc_failure(exc)
        except Exception as exc:
            incident = new_id()[:12]
            logger.exception(
                "rpc.handler_failed method=%s incident=%s error=%s",
                request.method,
                incident,
                type(exc).__name__,
            )
            failure = Failure.internal(exc, request.method, incident)
        if msg_id is None:
            return None
        try:
            return encode_reply(msg_id, result, failure)
        except (TypeError, ValueError) as exc:
            incident = new_id()[:12]
            logger.error(
                "rpc.reply_unencodable method=%s incident=%s error=%s",
                request.method,
                incident,
                exc,
            )
            return encode_reply(msg_id, failure=Failure.internal(exc, request.method, incident))

    async def _reply(self, channel: Channel, request: Request, body: bytes) -> None:
        assert request.reply_q is not None
        timeout = self._config.confirm_timeout
        with trio.move_on_after(timeout):
            await channel.publish(REPLY_EXCHANGE, request.reply_q, body, message_properties())
            return
        # A broker that takes messages but confirms none is as good as gone: start again.
        channel.abort(f"the broker did not confirm a reply within {timeout:g} s")

    def _log_rejected(self, delivery: Delivery, why: str, request: Request | None = None) -> None:
        logger.warning(
            "rpc.rejected queue_key=%s method=%s call=%s reason=%s",
            delivery.routing_key,
            request.method if request else None,
            request.is_call if request else None,
            why,
        )


def _bad_arguments(handler: Handler, request: Request) -> Failure | None:
    """The failure oslo's dispatcher would produce for arguments the handler does not take."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # pragma: no cover - every Python callable has one
        return None
    try:
        signature.bind(request.ctxt, **request.args)
    except TypeError as exc:
        return Failure("TypeError", "builtins", f"{request.method}() {exc}")
    return None
