"""What the RPC transport and the domain agree on: handlers, failures and casts.

The transport (AMQP connection, oslo.messaging envelope, reply queues) knows nothing of subclouds;
the lifecycle endpoint and the status reporter know nothing of AMQP. They meet here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

Context = Mapping[str, Any]
"""The caller's request context (oslo.messaging's ``_context_*`` fields, prefix removed)."""

Handler = Callable[..., Awaitable[Any]]
"""``await handler(ctxt, **kwargs)``: the value is the call's reply (ignored for a cast)."""


class RpcFailure(Exception):
    """A handler's refusal, sent back as oslo.messaging's failure reply.

    A Python client re-raises it by class and module name (``exc_class`` in ``exc_module``; a
    class it cannot import comes back as ``oslo_messaging.RemoteError``), with ``message`` as its
    text, so upstream's exception names are part of the contract.
    """

    def __init__(
        self,
        exc_class: str,
        exc_module: str,
        message: str,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.exc_class = exc_class
        self.exc_module = exc_module
        self.message = message
        self.kwargs = dict(kwargs or {})


class Endpoint(Protocol):
    """The methods one topic serves."""

    def handlers(self) -> Mapping[str, Handler]: ...


class CastUndeliverable(ConnectionError):
    """The broker cannot take the cast now (no connection, publish refused): try again later."""


class Caster(Protocol):
    """Fire-and-forget messages to another service's topic (oslo.messaging ``cast``)."""

    async def cast(
        self,
        topic: str,
        method: str,
        kwargs: Mapping[str, Any],
        *,
        ctxt: Context | None = None,
    ) -> None:
        """Return once the broker has the message; raise :class:`CastUndeliverable` if it cannot."""
        ...
