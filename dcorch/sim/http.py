"""The few HTTP primitives the simulator needs on top of raw ASGI.

A hand-written ASGI app, not quart: it serves thousands of clouds from one process, and a quart
request's allocations, context variables and middleware show when a bench drives tens of
thousands of requests per minute. Handlers are plain synchronous functions over in-memory state,
:class:`Request` in, :class:`Response` out (or :class:`HttpError`): parsed once, no awaits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

JSON_CONTENT_TYPE = b"application/json"


@dataclass(slots=True)
class Request:
    """One parsed request, as handed to a service handler.

    ``path`` is what follows the cloud and service prefix (``users/abc`` for
    ``/subclouds/r1/keystone/v3/users/abc``); ``base_url``, the service root for ``links``.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str = ""
    server_url: str = ""
    """``scheme://host:port`` as the client addressed the server (for catalogs)."""
    route: str = ""
    """The matched route template (``users/{}``), used for per-route request counters."""

    def header(self, name: str) -> str | None:
        """Return a header by lower-case name, or None."""
        return self.headers.get(name)

    def json(self, error: type[HttpError] | None = None) -> Any:
        """Decode the body as JSON; a malformed or empty body is a 400 in the service's style."""
        factory = error or HttpError
        if not self.body:
            raise factory.make(400, "request body is required")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise factory.make(400, f"malformed JSON body: {exc}") from None
        except RecursionError:  # json's parser recurses per level
            raise factory.make(400, "malformed JSON body: nested too deeply") from None


@dataclass(slots=True)
class Response:
    """A complete response; the body is already encoded."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes | None = JSON_CONTENT_TYPE


def json_response(
    status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    """Encode ``payload`` as compact JSON."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, headers or [])


def empty_response(status: int = 204, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """A response without a body (204, or a HEAD answer)."""
    return Response(status, b"", headers or [], content_type=None)


def parse_query(raw: bytes) -> dict[str, str]:
    """Decode a query string; a repeated key keeps its last value (enough for these APIs)."""
    if not raw:
        return {}
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


class HttpError(Exception):
    """A 4xx/5xx answer raised from deep inside a handler.

    Each service subclasses it to render its real error body, as clients (and the proxy) expect.
    """

    TITLES = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Request Entity Too Large",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def make(cls, status: int, message: str) -> HttpError:
        """Build an error of this service's flavour (used where the flavour is a parameter)."""
        return cls(status, message)

    def response(self) -> Response:
        """The generic shape: ``{"error": ..., "detail": ...}``."""
        title = self.TITLES.get(self.status, "Error")
        return json_response(self.status, {"error": title, "detail": self.message})


class KeystoneError(HttpError):
    """Keystone's shape: ``{"error": {"code", "message", "title"}}``."""

    def response(self) -> Response:
        title = self.TITLES.get(self.status, "Error")
        body = {"error": {"code": self.status, "message": self.message, "title": title}}
        headers = []
        if self.status == 401:
            headers.append((b"www-authenticate", b'Keystone uri="http://127.0.0.1"'))
        return json_response(self.status, body, headers)


class SysinvError(HttpError):
    """sysinv's (and pecan's) shape: ``{"error_message": "<json with faultstring>"}``."""

    def response(self) -> Response:
        inner = json.dumps(
            {
                "faultcode": "Client" if self.status < 500 else "Server",
                "faultstring": self.message,
                "debuginfo": None,
            }
        )
        return json_response(self.status, {"error_message": inner})
