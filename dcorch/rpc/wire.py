"""oslo.messaging's rabbit wire format: the JSON envelope of requests, replies and failures.

Written from what the real library (18.3.1) sends, captured in tests/rpc/fixtures and described
in docs/rpc.md#wire-format; nothing here speaks AMQP, so the codec is tested on those bytes alone.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dcorch.rpc.contract import RpcFailure

OSLO_VERSION = "2.0"
"""The envelope version every current oslo.messaging writes (``oslo.version``)."""
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
DELIVERY_MODE = 2
"""Persistent, as oslo marks every message (whether it survives depends on the queue)."""
CONTEXT_PREFIX = "_context_"

NO_SUCH_METHOD_CLASS = "NoSuchMethod"
NO_SUCH_METHOD_MODULE = "oslo_messaging.rpc.dispatcher"
"""What the real server answers for a method its endpoints lack (a Python client re-raises it
as ``RemoteError``, since that module is not among its allowed remote exception modules)."""


class MalformedMessage(ValueError):
    """A request the server cannot act on; the text says why (it goes into one log line)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded call or cast."""

    method: str
    args: dict[str, Any]
    ctxt: dict[str, Any]
    unique_id: str | None = None
    """``_unique_id``: the same on a redelivery or a client's resend (the duplicate key)."""
    msg_id: str | None = None
    """``_msg_id``: a call's id, echoed in its reply; None for a cast."""
    reply_q: str | None = None
    """``_reply_q``: the caller's reply queue (published to through the default exchange)."""
    version: str | None = None
    namespace: str | None = None
    timeout: float | None = None
    """``_timeout``: the client's call-monitor interval (None unless it asked for one)."""

    @property
    def is_call(self) -> bool:
        return self.msg_id is not None and self.reply_q is not None


@dataclass(frozen=True, slots=True)
class Failure:
    """The ``failure`` of a reply: what a Python client re-raises (``class`` in ``module``)."""

    exc_class: str
    exc_module: str
    message: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rpc_failure(cls, failure: RpcFailure) -> Failure:
        return cls(failure.exc_class, failure.exc_module, failure.message, dict(failure.kwargs))

    @classmethod
    def internal(cls, exc: BaseException, method: str, incident: str) -> Failure:
        """An unexpected handler error: its class and module, but none of its text.

        The text of an unexpected error may hold internals (SQL, paths, addresses); the caller
        gets the class (so ``except KeyError`` still works on its side) and an incident id that
        names the log line holding the rest.
        """
        kind = type(exc)
        return cls(
            kind.__name__,
            kind.__module__,
            f"dcorch could not handle {method}: internal error {incident} (see dcorch's log)",
        )

    def to_json(self) -> str:
        """The failure as oslo writes it: a JSON string inside the reply's JSON.

        ``tb`` stays empty: a traceback is the server's business (it is in our log), and the
        client only prints it.
        """
        return json.dumps(
            {
                "class": self.exc_class,
                "module": self.exc_module,
                "message": self.message,
                "tb": [],
                "args": [self.message],
                "kwargs": self.kwargs,
            }
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply (the peer's and the tests' view)."""

    msg_id: str | None
    result: Any
    failure: dict[str, Any] | None
    ending: bool


def _loads(body: bytes | str) -> dict[str, Any]:
    try:
        outer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(outer, dict):
        raise MalformedMessage(f"body is a JSON {type(outer).__name__}, not an object")
    if "oslo.message" not in outer:
        return outer  # oslo still accepts the old, unenveloped form
    version = str(outer.get("oslo.version", ""))
    if version.split(".")[0] != OSLO_VERSION.split(".")[0]:
        raise MalformedMessage(f"unsupported oslo.version {version!r}")
    inner = outer["oslo.message"]
    if not isinstance(inner, str):
        raise MalformedMessage("oslo.message is not a JSON string")
    try:
        message = json.loads(inner)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"oslo.message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage("oslo.message is not a JSON object")
    return message


def _optional_str(message: Mapping[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"{key} must be a non-empty string")
    return value


def decode_request(body: bytes | str) -> Request:
    """A request from the broker's bytes.

    Raises:
        MalformedMessage: not JSON, not an oslo envelope, no method, arguments not an object.
    """
    message = _loads(body)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise MalformedMessage("no method")
    args = message.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise MalformedMessage(f"args of {method} is a JSON {type(args).__name__}, not an object")
    ctxt = {
        key[len(CONTEXT_PREFIX) :]: value
        for key, value in message.items()
        if key.startswith(CONTEXT_PREFIX)
    }
    msg_id = _optional_str(message, "_msg_id")
    reply_q = _optional_str(message, "_reply_q")
    if (msg_id is None) != (reply_q is None):
        raise MalformedMessage(f"{method}: _msg_id and _reply_q come together or not at all")
    timeout = message.get("_timeout")
    return Request(
        method=method,
        args=args,
        ctxt=ctxt,
        unique_id=_optional_str(message, "_unique_id"),
        msg_id=msg_id,
        reply_q=reply_q,
        version=_optional_str(message, "version"),
        namespace=_optional_str(message, "namespace"),
        timeout=float(timeout) if isinstance(timeout, int | float) else None,
    )


def _primitive(value: Any) -> Any:
    """JSON for what oslo's serializer would turn into primitives (dates, sets)."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def envelope(message: Mapping[str, Any]) -> bytes:
    """Wrap a message as oslo does: its JSON, as a string, inside ``oslo.message``."""
    inner = json.dumps(message, default=_primitive)
    return json.dumps({"oslo.version": OSLO_VERSION, "oslo.message": inner}).encode()


def new_id() -> str:
    """A message id as oslo makes them (a UUID4's 32 hex digits)."""
    return uuid.uuid4().hex


def encode_request(
    method: str,
    args: Mapping[str, Any],
    *,
    ctxt: Mapping[str, Any] | None = None,
    version: str | None = None,
    msg_id: str | None = None,
    reply_q: str | None = None,
    unique_id: str | None = None,
) -> bytes:
    """A cast (or, with ``msg_id`` and ``reply_q``, a call) in oslo's field order."""
    message: dict[str, Any] = {"method": method, "args": dict(args)}
    if version is not None:
        message["version"] = version
    if msg_id is not None:
        message["_msg_id"] = msg_id
        message["_reply_q"] = reply_q
        message["_timeout"] = None
    message["_unique_id"] = unique_id or new_id()
    for key, value in (ctxt or {}).items():
        message[CONTEXT_PREFIX + key] = value
    return envelope(message)


def encode_reply(msg_id: str, result: Any = None, failure: Failure | None = None) -> bytes:
    """The single reply of a call (``ending`` true: oslo's last and only reply message).

    Raises:
        TypeError: the result cannot be written as JSON.
    """
    return envelope(
        {
            "result": None if failure is not None else result,
            "failure": failure.to_json() if failure is not None else None,
            "ending": True,
            "_msg_id": msg_id,
            "_unique_id": new_id(),
        }
    )


def decode_reply(body: bytes | str) -> Reply:
    """A reply's fields; ``failure`` decoded from its inner JSON string."""
    message = _loads(body)
    failure = message.get("failure")
    if isinstance(failure, str):
        failure = json.loads(failure)
    return Reply(
        msg_id=message.get("_msg_id"),
        result=message.get("result"),
        failure=failure,
        ending=bool(message.get("ending", False)),
    )
