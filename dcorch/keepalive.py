"""Close a connection whose response starts before its request body has been received.

Hypercorn (0.18, trio worker) recycles a keep-alive HTTP/1.1 connection when the response is
done. If the app answers before it has read the request body (a 401 from the token check, a 405
from routing, an early refusal in the proxy) and the body arrives only afterwards, quart-trio
cancels its request task while hypercorn is still tidying that connection: it is then neither
recycled nor closed, and the client's next request on it waits forever (seen in the bad-input
fuzz as a 30 s read timeout on a request that succeeds when replayed on a fresh connection).

:func:`close_if_body_unread` wraps an ASGI app so that such a response says
``Connection: close``: the client opens a new connection for its next request instead of
reusing the stalled one. Responses to fully read requests (every normal one) keep the
connection alive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
