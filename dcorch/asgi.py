"""Serve an ASGI app with hypercorn inside the caller's nursery: the one embedding.

Usage::

    urls = await nursery.start(partial(serve_asgi, app, "127.0.0.1", 0))

``task_status.started`` gets the bound URLs once listening (port 0 works); the server stops
gracefully when ``shutdown_trigger`` returns, or is cancelled with its nursery. All servers use it.

One connection's failure ends that connection, never the listener (:class:`ContainedTCPServer`):
hypercorn 0.18's trio worker lets an exception of one connection escape into the server's
nursery, which stops the whole listener. A body cut short while the app already answers (a
client closing mid-body, ``./just fuzz``'s truncated requests) makes hypercorn send its 400 while
it closes the socket, and trio's ``BusyResourceError`` ends up there: one bad client took the v1
API down until the supervisor restarted it (upstream hypercorn issue 203 reports the same).

The keep-alive guard (:func:`close_if_body_unread`): hypercorn (0.18, trio worker) recycles a
keep-alive HTTP/1.1 connection when the response is done. If the app answers before reading the
body (a 401 from the token check, a 405 from routing, an early proxy refusal) and the body comes
later, quart-trio cancels its request task while hypercorn still tidies the connection, which is
then neither recycled nor closed: the next request on it hangs (bad-input fuzz: a 30 s read
timeout, fine on a fresh connection). Such responses say ``Connection: close``; others keep it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, cast

import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import ASGIFramework

logger = logging.getLogger(__name__)

DEFAULT_GRACEFUL_TIMEOUT = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ContainedTCPServer(TCPServer):
    """hypercorn's per-connection server, whose failures stay with their connection.

    Installed as the one hypercorn's trio worker starts per accepted connection (see the module
    docstring). Cancellation still propagates: only ``Exception`` leaves are contained.
    """

    async def run(self) -> None:
        try:
            await super().run()
        except* Exception as failed:
            logger.warning(
                "asgi.connection_failed error=%s",
                ", ".join(sorted({type(e).__name__ for e in failed.exceptions})),
            )
            with trio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except* Exception:
                    pass  # the connection is gone either way


hypercorn.trio.run.TCPServer = ContainedTCPServer  # type: ignore[attr-defined,misc]


def close_if_body_unread(app: ASGIApp) -> ASGIApp:
    """``app`` with ``Connection: close`` on responses that start before the body is read."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body_read = False

        async def receive_tracked() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.disconnect" or (
                message["type"] == "http.request" and not message.get("more_body", False)
            ):
                body_read = True
            return message

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_read:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await app(scope, receive_tracked, send_marked)

    return wrapped


def server_config(
    host: str, port: int, *, relay: bool, graceful_timeout: float, quiet: bool
) -> Config:
    """Hypercorn settings for one listener.

    No access log: the apps log method, path and status themselves, without the query string.
    ``relay``: a proxy relaying another server's answers, so hypercorn adds no ``Date`` or
    ``Server`` header (the client gets the master's, once). ``quiet``: no error log either, long
    keep-alives (the simulator: thousands of subclouds' connections, not test output noise).
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    if relay:
        config.include_date_header = False
        config.include_server_header = False
    if quiet:
        config.errorlog = None
        config.keep_alive_timeout = 75.0
    return config


async def serve_asgi(
    app: Any,
    host: str,
    port: int,
    *,
    relay: bool = False,
    quiet: bool = False,
    guard_keepalive: bool = True,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0 picks a free port) until ``shutdown_trigger`` returns.

    ``guard_keepalive``: wrap in :func:`close_if_body_unread` (off for the simulator: reads first).
    """
    config = server_config(host, port, relay=relay, graceful_timeout=graceful_timeout, quiet=quiet)
    served = close_if_body_unread(app) if guard_keepalive else app
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(
                hypercorn.trio.serve,
                # The guard's ASGI types are the plain spec's; hypercorn's are narrower.
                cast(ASGIFramework, served),
                config,
                shutdown_trigger=shutdown_trigger or trio.sleep_forever,
                mode="asgi",
            )
        )
        task_status.started(urls)
