"""Test doubles for the proxy: a tiny master keystone + sysinv (raw ASGI) and a work sink.

The fake master is served by hypercorn on port 0, so the proxy talks to it over real HTTP. It
records every request it gets (raw path, query, headers, body) and answers the intercepted routes
with the shapes the real services use. A test can override any answer with
``master.responses[(method, path)] = Canned(...)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
import trio
from cryptography.fernet import Fernet, MultiFernet

from dcorch.proxy.errors import Overloaded
from dcorch.proxy.fernet_audit import CachedFernetKeys, FernetKeysUnavailable
from dcorch.work import EnqueueResult, WorkOrder

ADMIN_TOKEN = "gAAAAA-admin-token-0123456789"
MEMBER_TOKEN = "gAAAAA-member-token-0123456789"
SERVICE_TOKEN = "gAAAAA-dcorch-service-token-0123"
"""The token dcorch's own calls carry (the service's session plays it in production)."""
BIG_SIZE = 5 * 1024 * 1024
BIG_BODY = bytes(range(256)) * (BIG_SIZE // 256)
SINGULAR = {"users": "user", "groups": "group", "roles": "role", "projects": "project"}
REQUEST_ID = "req-2f1c6a0e-1d1e-4b8f-9d4e-1a2b3c4d5e6f"


@dataclass
class Canned:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == key]


def _json(status: int, value: Any, *extra: tuple[bytes, bytes]) -> Canned:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-openstack-request-id", REQUEST_ID.encode()),
        (b"vary", b"X-Auth-Token"),
        *extra,
    ]
    return Canned(status, json.dumps(value).encode(), headers)


def token_body(roles: Sequence[str], expires_at: str = "2999-01-01T00:00:00.000000Z") -> Any:
    return {
        "token": {
            "expires_at": expires_at,
            "roles": [{"id": f"r-{name}", "name": name} for name in roles],
            "user": {"id": "u-admin", "name": "admin"},
            "project": {"id": "p-admin", "name": "admin"},
        }
    }


class FakeMaster:
    """A master keystone and sysinv in one ASGI app."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.responses: dict[tuple[str, str], Canned] = {}
        self.tokens: dict[str, Any] = {
            ADMIN_TOKEN: token_body(["admin", "member"]),
            MEMBER_TOKEN: token_body(["member"]),
        }
        self.fernet_keys: list[str] = [Fernet.generate_key().decode()]
        self.certificates: Any = {"signature": "ssl_1234567890", "certtype": "ssl"}
        self.created_id = "6f2b6a4fd5d54d2ca4bd7c5b1e7a2c11"

    # -- what the tests look at ------------------------------------------------------------

    @property
    def forwarded(self) -> list[Seen]:
        """Requests other than the proxy's own token validations and key fetches."""
        return [s for s in self.seen if not _is_side_call(s)]

    @property
    def validations(self) -> int:
        return sum(1 for s in self.seen if s.method == "GET" and s.path == "/v3/auth/tokens")

    @property
    def key_fetches(self) -> int:
        return sum(1 for s in self.seen if s.path == "/v1/fernet_repo")

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(
            scope["method"],
            scope["raw_path"].decode("latin-1"),
            scope["query_string"],
            list(scope["headers"]),
            body,
        )
        self.seen.append(seen)
        if seen.method == "GET" and seen.path == "/big":
            await self._send_big(send)
            return
        canned = self.responses.get((seen.method, seen.path)) or self._answer(seen)
        headers = list(canned.headers)
        headers.append((b"content-length", str(len(canned.body)).encode()))
        await send({"type": "http.response.start", "status": canned.status, "headers": headers})
        await send({"type": "http.response.body", "body": canned.body})

    async def _send_big(self, send: Any) -> None:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(BIG_BODY)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = 64 * 1024
        for start in range(0, len(BIG_BODY), step):
            chunk = BIG_BODY[start : start + step]
            more = start + step < len(BIG_BODY)
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    def _answer(self, seen: Seen) -> Canned:
        method, path = seen.method, seen.path
        if path in ("/", "/v3", "/v3/", "/v1", "/v1/"):
            return _json(200, {"version": {"id": "v3.14", "status": "stable"}})
        if path == "/v3/auth/tokens":
            subject = seen.header("x-subject-token") or ""
            if method == "GET":
                if subject in self.tokens:
                    return _json(200, self.tokens[subject], (b"x-subject-token", subject.encode()))
                return _json(404, {"error": {"code": 404, "message": "not found"}})
            if method == "DELETE":
                return Canned(204)
        if path == "/v1/fernet_repo" and method == "GET":
            return _json(200, [{"id": i, "key": k} for i, k in enumerate(self.fernet_keys)])
        if path == "/v1/certificate/certificate_install" and method == "POST":
            return _json(200, {"certificates": self.certificates, "error": ""})
        if (m := re.fullmatch(r"/v1/certificate/([^/]+)", path)) and method == "DELETE":
            return _json(200, {"uuid": m[1], "signature": "ssl_ca_987654321"})
        if m := re.fullmatch(r"/v1/iuser/([^/]+)", path):
            return _json(200, {"uuid": m[1], "root_sig": "abc"})
        if path == "/v3/echo-length":
            digest = hashlib.sha256(seen.body).hexdigest()
            return _json(200, {"length": len(seen.body), "sha256": digest})
        if m := re.fullmatch(r"/v3/(users|groups|roles|projects)", path):
            if method == "POST":
                name = SINGULAR[m[1]]
                return _json(201, {name: {"id": self.created_id, "name": "x"}})
            return _json(200, {m[1]: [], "links": {"self": path}})
        if m := re.fullmatch(r"/v3/(users|groups|roles|projects)/([^/]+)", path):
            if method == "PATCH":
                return _json(200, {SINGULAR[m[1]]: {"id": m[2]}})
            if method == "DELETE":
                return Canned(204)
        if method in ("PUT", "DELETE", "POST") and path.startswith("/v3/"):
            return Canned(204)
        return _json(404, {"error": {"code": 404, "message": "not found"}})


def service_fernet_keys(
    master_url: str, client: httpx.AsyncClient, **cache: Any
) -> CachedFernetKeys:
    """The master's keys fetched as dcorch itself, as the service's key source does."""

    async def fetch() -> Any:
        headers = {"X-Auth-Token": SERVICE_TOKEN}
        try:
            response = await client.get(master_url + "/v1/fernet_repo", headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise FernetKeysUnavailable(f"fernet_repo: {type(exc).__name__}") from None
        return response.json()

    return CachedFernetKeys(fetch, **cache)


def _is_side_call(seen: Seen) -> bool:
    if seen.path == "/v1/fernet_repo":
        return True
    return seen.method == "GET" and seen.path == "/v3/auth/tokens"


class FakeSink:
    """A work sink that records what it commits; can refuse, fail or wait on a gate."""

    def __init__(self) -> None:
        self.orders: list[WorkOrder] = []
        self.calls = 0
        self.overloaded_retry_after: int | None = None
        self.error: Exception | None = None
        self.gate: trio.Event | None = None
        self.entered = trio.Event()
        self.committed = trio.Event()

    async def submit(self, orders: Sequence[WorkOrder]) -> list[EnqueueResult]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.overloaded_retry_after is not None:
            raise Overloaded(self.overloaded_retry_after)
        if self.error is not None:
            raise self.error
        self.orders.extend(orders)
        self.committed.set()
        return [
            EnqueueResult(orch_job_id=i, resource_id=i, target_regions=("subcloud1",))
            for i, _ in enumerate(orders, start=1)
        ]


def make_fernet_token(keys: Sequence[str], audit: bytes, *, user_id: bytes = b"u1") -> str:
    """A keystone-style fernet token: padding stripped, audit ids as raw bytes."""
    payload = msgpack.packb([0, user_id, 1, "p-admin", 1893456000.0, [audit]])
    crypto = MultiFernet([Fernet(key) for key in keys])
    return crypto.encrypt(payload).rstrip(b"=").decode()


def keystone_audit_id(audit: bytes) -> str:
    return base64.urlsafe_b64encode(audit).rstrip(b"=").decode()
