"""An AMQP 0-9-1 client on Trio sockets: pamqp encodes and decodes the frames, this owns the I/O.

Why this and not an asyncio client on an owned thread (docs/rpc.md#client): a connection here is
a Trio nursery, so losing the broker cancels exactly the work that used it and surfaces as one
:class:`AmqpError` out of :func:`open_connection`; nothing crosses a thread, and a cancelled
caller stops at once. Only what dcorch's RPC needs is spoken: the handshake (PLAIN), heartbeats,
channels, exchange/queue declare and bind, ``basic.qos``, ``basic.consume``, ``basic.publish``
with publisher confirms (and ``mandatory`` returns), ack/reject and a clean close.

Any channel error from the broker (a declare that does not match, a consumer it cancels) ends
the whole connection: the callers reconnect and declare again, which is simpler than repairing
one channel and never leaves a half-working consumer.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio
from pamqp import commands, frame
from pamqp import exceptions as pamqp_errors
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

from dcorch.rpc.address import BrokerAddress, BrokerHost

logger = logging.getLogger(__name__)

Properties = commands.Basic.Properties
FRAME_MAX = 131072
"""Largest frame we offer (RabbitMQ's default); the broker may ask for less."""
_FRAME_HEADER = 7
_FRAME_END = 0xCE
_CLOSE_TIMEOUT = 2.0


class AmqpError(Exception):
    """The connection to the broker is unusable: connect again."""


class BrokerUnreachable(AmqpError):
    """No TCP connection or no AMQP handshake within the connect timeout."""


class ConnectionLost(AmqpError):
    """The socket closed, the broker closed the connection, or its heartbeats stopped."""


class ChannelClosed(AmqpError):
    """The broker closed a channel (a declare that does not match, a cancelled consumer)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"broker closed the channel: {code} {text}")
        self.code = code


class ConsumerCancelled(AmqpError):
    """The broker cancelled a consumer (its queue was deleted): declare and consume again."""


class PublishRefused(AmqpError):
    """The broker nacked a publish: it did not take the message."""


class Unroutable(Exception):
    """A ``mandatory`` publish reached no queue (the broker returned it); the link is fine."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the broker delivered to a consumer of this channel."""

    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    consumer_tag: str
    properties: Properties
    body: bytes


class _Pending:
    """A reply or confirm one task waits for; failed by the reader when the connection dies."""

    __slots__ = ("_done", "error", "message_id", "value")

    def __init__(self, message_id: str | None = None) -> None:
        self._done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.message_id = message_id

    def resolve(self, value: Any = None) -> None:
        if not self._done.is_set():
            self.value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self.error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Incoming:
    """A ``basic.deliver`` or ``basic.return`` whose header and body frames are still coming."""

    __slots__ = ("body", "method", "properties", "size")

    def __init__(self, method: commands.Basic.Deliver | commands.Basic.Return) -> None:
        self.method = method
        self.properties = Properties()
        self.size = -1
        self.body = bytearray()


class Channel:
    """One AMQP channel in confirm mode; made by :meth:`Connection.channel`."""

    def __init__(self, connection: Connection, channel_id: int, delivery_buffer: int) -> None:
        self._connection = connection
        self.id = channel_id
        self._rpc_lock = trio.Lock()
        self._rpc: _Pending | None = None
        self._confirms: OrderedDict[int, _Pending] = OrderedDict()
        self._returned: set[str] = set()
        self._publish_seq = 0
        self._incoming: _Incoming | None = None
        self._send_deliveries, self.deliveries = trio.open_memory_channel[Delivery](delivery_buffer)
        """Messages for this channel's consumers, in the order the broker sent them."""

    async def _call(self, method: Frame) -> Frame:
        """Send a synchronous method and wait for its ``...Ok`` (one at a time per channel)."""
        async with self._rpc_lock:
            pending = _Pending()
            self._rpc = pending
            await self._connection._send(frame.marshal(method, self.id))
            try:
                result: Frame = await pending.wait()
            finally:
                self._rpc = None
            return result

    async def exchange_declare(
        self, name: str, exchange_type: str, *, durable: bool = False, auto_delete: bool = False
    ) -> None:
        await self._call(
            commands.Exchange.Declare(
                exchange=name, exchange_type=exchange_type, durable=durable, auto_delete=auto_delete
            )
        )

    async def queue_declare(
        self,
        name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """Declare a queue (an empty name lets the broker pick one); returns its name."""
        ok = await self._call(
            commands.Queue.Declare(
                queue=name,
                durable=durable,
                auto_delete=auto_delete,
                exclusive=exclusive,
                arguments=dict(arguments or {}),
            )
        )
        assert isinstance(ok, commands.Queue.DeclareOk), ok
        return str(ok.queue)

    async def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._call(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key)
        )

    async def queue_delete(self, queue: str) -> None:
        await self._call(commands.Queue.Delete(queue=queue))

    async def exchange_delete(self, name: str) -> None:
        await self._call(commands.Exchange.Delete(exchange=name))

    async def qos(self, prefetch_count: int) -> None:
        """At most ``prefetch_count`` unacknowledged deliveries on this channel (0: no limit)."""
        await self._call(commands.Basic.Qos(prefetch_count=prefetch_count, global_=True))

    async def consume(self, queue: str) -> str:
        """Start a consumer (manual acks); its messages arrive on :attr:`deliveries`."""
        ok = await self._call(commands.Basic.Consume(queue=queue, consumer_tag=""))
        assert isinstance(ok, commands.Basic.ConsumeOk), ok
        return str(ok.consumer_tag)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        """Publish and return once the broker confirmed it has the message.

        Raises:
            Unroutable: ``mandatory`` and no queue took it.
            PublishRefused, ConnectionLost, ChannelClosed: the broker does not have it.
        """
        if mandatory and not properties.message_id:
            properties.message_id = uuid.uuid4().hex
        pending = _Pending(properties.message_id if mandatory else None)
        frame_max = self._connection.frame_max - 8
        parts = [
            frame.marshal(
                commands.Basic.Publish(
                    exchange=exchange, routing_key=routing_key, mandatory=mandatory
                ),
                self.id,
            ),
            frame.marshal(ContentHeader(0, len(body), properties), self.id),
        ]
        parts.extend(
            frame.marshal(ContentBody(body[start : start + frame_max]), self.id)
            for start in range(0, len(body), frame_max)
        )
        async with self._connection._send_lock:
            # The tag is the publish's position on the channel: it must be taken and the frames
            # written under one lock, or two publishers could swap their confirms.
            self._publish_seq += 1
            self._confirms[self._publish_seq] = pending
            await self._connection._send_locked(b"".join(parts))
        await pending.wait()

    def abort(self, reason: str) -> None:
        """End the whole connection now (its block raises :class:`ConnectionLost`)."""
        self._connection._fail(ConnectionLost(reason))

    async def ack(self, delivery_tag: int) -> None:
        await self._connection._send(frame.marshal(commands.Basic.Ack(delivery_tag), self.id))

    async def reject(self, delivery_tag: int, *, requeue: bool) -> None:
        await self._connection._send(
            frame.marshal(commands.Basic.Reject(delivery_tag, requeue=requeue), self.id)
        )

    # The reader's side.

    def _on_frame(self, value: Any) -> None:
        if isinstance(value, commands.Basic.Deliver | commands.Basic.Return):
            self._incoming = _Incoming(value)
        elif isinstance(value, ContentHeader):
            assert self._incoming is not None, "content header without a method"
            self._incoming.properties = value.properties
            self._incoming.size = value.body_size
            if value.body_size == 0:
                self._complete()
        elif isinstance(value, ContentBody):
            assert self._incoming is not None, "content body without a method"
            self._incoming.body += value.value
            if len(self._incoming.body) >= self._incoming.size:
                self._complete()
        elif isinstance(value, commands.Basic.Ack):
            self._confirm(value.delivery_tag, value.multiple, None)
        elif isinstance(value, commands.Basic.Nack):
            self._confirm(value.delivery_tag, value.multiple, PublishRefused("broker nacked"))
        elif isinstance(value, commands.Basic.Cancel):
            raise ConsumerCancelled(f"broker cancelled consumer {value.consumer_tag}")
        elif self._rpc is not None:
            self._rpc.resolve(value)
        else:
            logger.warning("amqp.unexpected_frame channel=%s frame=%s", self.id, value.name)

    def _complete(self) -> None:
        incoming, self._incoming = self._incoming, None
        assert incoming is not None
        method = incoming.method
        if isinstance(method, commands.Basic.Return):
            if incoming.properties.message_id:
                self._returned.add(incoming.properties.message_id)
            return
        delivery = Delivery(
            delivery_tag=int(method.delivery_tag or 0),
            redelivered=bool(method.redelivered),
            exchange=method.exchange,
            routing_key=method.routing_key or "",
            consumer_tag=method.consumer_tag or "",
            properties=incoming.properties,
            body=bytes(incoming.body),
        )
        # prefetch bounds what the broker sends, and the buffer holds a full prefetch
        self._send_deliveries.send_nowait(delivery)

    def _confirm(self, tag: int, multiple: bool, error: AmqpError | None) -> None:
        if multiple:
            while self._confirms and next(iter(self._confirms)) <= tag:
                self._settle(self._confirms.popitem(last=False)[1], error)
        elif (pending := self._confirms.pop(tag, None)) is not None:
            self._settle(pending, error)

    def _settle(self, pending: _Pending, error: AmqpError | None) -> None:
        if error is not None:
            pending.fail(error)
        elif pending.message_id is not None and pending.message_id in self._returned:
            self._returned.discard(pending.message_id)
            pending.fail(Unroutable("no queue is bound for this routing key"))
        else:
            pending.resolve()

    def _fail(self, error: AmqpError) -> None:
        if self._rpc is not None:
            self._rpc.fail(error)
        for pending in self._confirms.values():
            pending.fail(error)
        self._confirms.clear()
        self._send_deliveries.close()


class Connection:
    """A live AMQP connection; use it only inside :func:`open_connection`'s block."""

    def __init__(self, stream: trio.SocketStream, heartbeat: int, frame_max: int) -> None:
        self._stream = stream
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self._send_lock = trio.Lock()
        self._channels: dict[int, Channel] = {}
        self._closing: _Pending | None = None
        self.error: AmqpError | None = None
        self._cancel_scope: trio.CancelScope | None = None

    async def channel(self, *, delivery_buffer: int = 0) -> Channel:
        """Open a channel in publisher-confirm mode.

        ``delivery_buffer`` must hold every unacknowledged delivery the broker may send it
        (its prefetch); a consumer-less channel needs none.
        """
        if self.error is not None:
            raise self.error
        channel_id = len(self._channels) + 1
        channel = Channel(self, channel_id, delivery_buffer)
        self._channels[channel_id] = channel
        await channel._call(commands.Channel.Open())
        await channel._call(commands.Confirm.Select())
        return channel

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            await self._send_locked(data)

    async def _send_locked(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = ConnectionLost(f"cannot write to the broker: {exc!r}")
            self._fail(error)
            raise error from None

    def _fail(self, error: AmqpError) -> None:
        """Record the first error, wake every waiter with it and stop the connection's tasks."""
        if self.error is not None:
            return
        self.error = error
        for channel in self._channels.values():
            channel._fail(error)
        if self._closing is not None:
            self._closing.fail(error)
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _read_loop(self, reader: _FrameReader) -> None:
        timeout = 2 * self.heartbeat if self.heartbeat else float("inf")
        try:
            while True:
                with trio.move_on_after(timeout) as scope:
                    channel_id, value = await reader.next()
                if scope.cancelled_caught:
                    raise ConnectionLost(f"no frame from the broker for {timeout:g} s")
                await self._on_frame(channel_id, value)
        except AmqpError as exc:
            self._fail(exc)
        except trio.Cancelled:
            raise
        except Exception as exc:  # a bug here must still end the connection, not hang it
            logger.exception("amqp.reader_failed")
            self._fail(ConnectionLost(f"reader failed: {exc!r}"))

    async def _on_frame(self, channel_id: int, value: Any) -> None:
        if isinstance(value, Heartbeat):
            return
        if channel_id == 0:
            if isinstance(value, commands.Connection.Close):
                await self._reply(frame.marshal(commands.Connection.CloseOk(), 0))
                raise ConnectionLost(
                    f"broker closed the connection: {value.reply_code} {value.reply_text}"
                )
            if isinstance(value, commands.Connection.CloseOk) and self._closing is not None:
                self._closing.resolve()
                return
            if isinstance(value, commands.Connection.Blocked):
                logger.warning("amqp.blocked reason=%s", value.reason)
                return
            if isinstance(value, commands.Connection.Unblocked):
                logger.info("amqp.unblocked")
                return
            logger.warning(
                "amqp.unexpected_frame channel=0 frame=%s", getattr(value, "name", value)
            )
            return
        channel = self._channels.get(channel_id)
        if channel is None:
            raise ConnectionLost(f"frame for unknown channel {channel_id}")
        if isinstance(value, commands.Channel.Close):
            await self._reply(frame.marshal(commands.Channel.CloseOk(), channel_id))
            raise ChannelClosed(int(value.reply_code or 0), str(value.reply_text))
        channel._on_frame(value)

    async def _reply(self, data: bytes) -> None:
        """The ``close-ok`` the broker waits for before it drops us (best effort, bounded)."""
        with trio.move_on_after(_CLOSE_TIMEOUT):
            with suppress(AmqpError):
                await self._send(data)

    async def _heartbeat_loop(self) -> None:
        beat = frame.marshal(Heartbeat(), 0)
        while True:
            await trio.sleep(self.heartbeat / 2)
            try:
                await self._send(beat)
            except AmqpError:
                return

    async def _close(self) -> None:
        """Close politely: ``connection.close`` and its ``close-ok`` (bounded), then the socket."""
        try:
            if self.error is None:
                self._closing = _Pending()
                close = commands.Connection.Close(200, "bye", class_id=0, method_id=0)
                with trio.move_on_after(_CLOSE_TIMEOUT), suppress(AmqpError):
                    await self._send(frame.marshal(close, 0))
                    await self._closing.wait()
                self.error = ConnectionLost("connection closed")
        finally:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()


class _FrameReader:
    """Cuts the byte stream into frames for pamqp (which decodes one whole frame at a time)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> tuple[int, Any]:
        while True:
            if len(self._buffer) >= _FRAME_HEADER:
                size = int.from_bytes(self._buffer[3:7], "big")
                end = _FRAME_HEADER + size + 1
                if len(self._buffer) >= end:
                    data = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    if data[-1] != _FRAME_END:
                        raise ConnectionLost("bad frame end from the broker")
                    try:
                        _, channel_id, value = frame.unmarshal(data)
                    except pamqp_errors.UnmarshalingException as exc:
                        raise ConnectionLost(f"undecodable frame: {exc}") from None
                    return channel_id, value
            try:
                chunk = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(f"cannot read from the broker: {exc!r}") from None
            if not chunk:
                raise ConnectionLost("the broker closed the socket")
            self._buffer += chunk


async def _expect(reader: _FrameReader, kind: type[Frame], step: str) -> Any:
    _, value = await reader.next()
    if isinstance(value, commands.Connection.Close):
        raise BrokerUnreachable(f"broker refused at {step}: {value.reply_code} {value.reply_text}")
    if not isinstance(value, kind):
        raise BrokerUnreachable(f"broker sent {getattr(value, 'name', value)} at {step}")
    return value


async def _handshake(
    stream: trio.SocketStream, host: BrokerHost, vhost: str, heartbeat: int, name: str
) -> tuple[_FrameReader, int, int]:
    reader = _FrameReader(stream)
    await stream.send_all(frame.marshal(ProtocolHeader(), 0))
    await _expect(reader, commands.Connection.Start, "start")
    properties: dict[str, Any] = {
        "product": "dcorch-trio",
        "connection_name": name,
        "capabilities": {
            "publisher_confirms": True,
            "consumer_cancel_notify": True,
            "basic.nack": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
        },
    }
    start_ok = commands.Connection.StartOk(
        client_properties=properties,
        mechanism="PLAIN",
        response=f"\0{host.username}\0{host.password}",
    )
    await stream.send_all(frame.marshal(start_ok, 0))
    tune = await _expect(reader, commands.Connection.Tune, "login")
    offered = int(tune.heartbeat)
    agreed = 0 if heartbeat == 0 else min(heartbeat, offered or heartbeat)
    frame_max = min(FRAME_MAX, tune.frame_max or FRAME_MAX)
    tune_ok = commands.Connection.TuneOk(
        channel_max=tune.channel_max, frame_max=frame_max, heartbeat=agreed
    )
    await stream.send_all(frame.marshal(tune_ok, 0))
    await stream.send_all(frame.marshal(commands.Connection.Open(virtual_host=vhost), 0))
    await _expect(reader, commands.Connection.OpenOk, f"open of virtual host {vhost!r}")
    return reader, agreed, frame_max


@asynccontextmanager
async def open_connection(
    address: BrokerAddress,
    *,
    heartbeat: float = 30.0,
    connect_timeout: float = 10.0,
    name: str = "dcorch",
    attempt: int = 0,
) -> AsyncIterator[Connection]:
    """Connect to the broker (host ``attempt`` modulo the URL's hosts) for the block's length.

    The block's own exceptions come out as themselves. When the connection fails first, the
    block is cancelled and :class:`AmqpError` (``ConnectionLost``, ``ChannelClosed``) is raised;
    a connect that fails or takes longer than ``connect_timeout`` raises ``BrokerUnreachable``.
    """
    host = address.hosts[attempt % len(address.hosts)]
    stream: trio.SocketStream | None = None
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host.host, host.port)
            reader, agreed, frame_max = await _handshake(
                stream, host, address.virtual_host, max(0, round(heartbeat)), name
            )
    except (OSError, trio.TooSlowError, AmqpError, trio.BrokenResourceError) as exc:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        what = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc) or repr(exc)
        raise BrokerUnreachable(f"cannot connect to {host.host}:{host.port}: {what}") from None
    connection = Connection(stream, agreed, frame_max)
    body_error: BaseException | None = None
    failure: AmqpError | None = None
    async with trio.open_nursery() as nursery:
        connection._cancel_scope = nursery.cancel_scope
        nursery.start_soon(connection._read_loop, reader)
        if agreed:
            nursery.start_soon(connection._heartbeat_loop)
        try:
            yield connection
        except trio.Cancelled:  # noqa: ASYNC103 (ours: the scope below absorbs it anyway)
            if connection.error is None:
                raise  # cancelled from outside: propagate as it is
            # else: our own scope cancelled the block because the connection failed
        except BaseExceptionGroup as group:
            # nested nurseries in the block: all Cancelled means our scope cancelled it
            if connection.error is None or not _only_cancelled(group):
                if not isinstance(group, Exception):
                    raise
                body_error = group
        except Exception as exc:
            body_error = exc  # held back: the connection still closes politely first
        finally:
            failure = connection.error
            with trio.CancelScope(shield=True):
                await connection._close()
            nursery.cancel_scope.cancel()
    if failure is not None and (body_error is None or isinstance(body_error, AmqpError)):
        raise failure  # the connection's own error says more than what the block saw of it
    if body_error is not None:
        raise body_error


def _only_cancelled(exc: BaseException) -> bool:
    """True for a ``Cancelled``, or a group (from nested nurseries) of nothing else."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return False
