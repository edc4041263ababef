"""Serve one proxy app with hypercorn inside the caller's nursery.

Usage::

    urls = await nursery.start(partial(serve_proxy, app, "127.0.0.1", 0))

``task_status.started`` receives the bound URLs once the socket listens, so port 0 works. The
server stops gracefully when ``shutdown_trigger`` returns, or is cancelled with its nursery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config

from dcorch.keepalive import close_if_body_unread
from dcorch.proxy.app import ProxyApp

DEFAULT_GRACEFUL_TIMEOUT = 5.0


def proxy_server_config(host: str, port: int, *, graceful_timeout: float) -> Config:
    """Hypercorn settings for a proxy listener.

    No ``Date`` or ``Server`` header of hypercorn's own: the client must get the master's, once.
    No access log: the handler logs method, path and status without the query string.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.include_date_header = False
    config.include_server_header = False
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    return config


async def serve_proxy(
    app: ProxyApp,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns (default: never)."""
    config = proxy_server_config(host, port, graceful_timeout=graceful_timeout)
    try:
        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    close_if_body_unread(app),  # type: ignore[arg-type]
                    config,
                    shutdown_trigger=shutdown_trigger or trio.sleep_forever,
                )
            )
            task_status.started(urls)
    finally:
        # When the server is cancelled rather than shut down, hypercorn skips the ASGI lifespan
        # shutdown, so after_serving never closes the master client: close it here.
        with trio.CancelScope(shield=True):
            await app.handler.aclose()
