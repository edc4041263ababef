"""Serve the dcorch v1 API with hypercorn inside the caller's nursery (URLs via task_status)."""

from __future__ import annotations

from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config
from quart_trio import QuartTrio

from dcorch.keepalive import close_if_body_unread


async def serve_api(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (0 picks a free port) until cancelled."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(
                hypercorn.trio.serve,
                close_if_body_unread(app),  # type: ignore[arg-type]
                config,
                shutdown_trigger=trio.sleep_forever,
            )
        )
        task_status.started(urls)
