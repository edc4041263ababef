"""Errors the proxy raises or turns into HTTP replies, and the JSON shape of those replies.

Replies the proxy makes *itself* (not the master's, relayed) have the real proxy's ``parser``
filter shape, ``{"error_message": "<JSON text of a fault>"}``, so existing clients (cgts-client,
openstackclient through the DC wrappers) parse them like the master service's errors.

Hierarchy (``Overloaded``, from :mod:`dcorch.work`, becomes 503 + Retry-After)::

    Exception
    ├── BodyTooLarge            an intercepted request body exceeds the cap (-> 413)
    └── ValidationUnavailable   keystone could not be asked whether a token is valid (-> 503)
"""

from __future__ import annotations

import json

from quart_trio.wrappers import TrioResponse

from dcorch.work import Overloaded as Overloaded


class BodyTooLarge(Exception):
    """Raised when an intercepted request's body is larger than ``ProxySettings.max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class ValidationUnavailable(Exception):
    """Raised when keystone cannot be reached or gives an unexpected answer for a token check."""


def fault_body(status: int, message: str) -> bytes:
    """The JSON body of a proxy-made error reply (the ``parser`` filter's shape).

    ``faultcode`` is ``Client`` for 4xx, ``Server`` for 5xx, as in the real services' WSME faults.
    """
    fault = {
        "faultcode": "Client" if status < 500 else "Server",
        "faultstring": message,
        "debuginfo": None,
    }
    return json.dumps({"error_message": json.dumps(fault)}).encode()


KEYSTONE_TITLES = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}
"""The statuses dcorch answers itself in keystone's shape: the identity proxy's 401 (authorization
is keystone's own answer there), the DB-sync agent's 401, 403 and 503 (docs/dbsync.md)."""


def keystone_error_response(status: int, message: str) -> TrioResponse:
    """A refusal in Keystone's own shape, ``{"error": {"code", "title", "message"}}``.

    The identity proxy answers its own 401 like this because keystone clients
    (keystoneauth, python-keystoneclient, the openstack CLI) parse that shape and print
    "Unrecognized schema in response body" for any other.
    """
    body = {"error": {"code": status, "title": KEYSTONE_TITLES[status], "message": message}}
    return TrioResponse(json.dumps(body).encode(), status=status, content_type="application/json")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> TrioResponse:
    """Build a proxy-made JSON error reply; ``message`` must not contain secrets."""
    response = TrioResponse(
        fault_body(status, message), status=status, content_type="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
