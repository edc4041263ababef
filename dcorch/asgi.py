"""Serve an ASGI app with hypercorn inside the caller's nursery: the one embedding.

Usage::

    urls = await nursery.start(partial(serve_asgi, app, "127.0.0.1", 0))

``task_status.started`` receives the bound URLs once the socket listens, so port 0 works. The
server stops gracefully when ``shutdown_trigger`` returns, or is cancelled with its nursery.
Every server of the process goes through it: the proxies, the dcorch v1 API and the simulated
clouds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from dcorch.keepalive import close_if_body_unread

DEFAULT_GRACEFUL_TIMEOUT = 5.0


def server_config(
    host: str, port: int, *, relay: bool, graceful_timeout: float, quiet: bool
) -> Config:
    """Hypercorn settings for one listener.

    No access log: the apps log method, path and status themselves, without the query string.
    ``relay``: the app relays another server's answers (a proxy), so hypercorn must not add a
    ``Date`` or ``Server`` header of its own: the client gets the master's, once.
    ``quiet``: no error log either, and long keep-alives (the simulator, which serves
    thousands of subclouds' connections and must not be the noisy part of a test's output).
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
    on_stop: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0 picks a free port) until ``shutdown_trigger`` returns.

    ``guard_keepalive`` wraps the app in :func:`dcorch.keepalive.close_if_body_unread` (every
    app that may answer before reading a request body; the simulator always reads first).

    ``on_stop`` runs (shielded) however the server ends. Hypercorn skips the ASGI lifespan
    shutdown when it is cancelled rather than shut down, so what an app must release (the
    proxy's client of the master) is released here.
    """
    config = server_config(host, port, relay=relay, graceful_timeout=graceful_timeout, quiet=quiet)
    served = close_if_body_unread(app) if guard_keepalive else app
    try:
        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    # keepalive's ASGI types are the plain spec's; hypercorn's are narrower.
                    cast(ASGIFramework, served),
                    config,
                    shutdown_trigger=shutdown_trigger or trio.sleep_forever,
                    mode="asgi",
                )
            )
            task_status.started(urls)
    finally:
        if on_stop is not None:
            with trio.CancelScope(shield=True):
                await on_stop()
