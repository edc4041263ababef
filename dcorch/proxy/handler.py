"""The per-request pipeline of one proxy (docs/behaviour.md#proxy-pipeline).

The ``User-Header: distcloud`` bypass and the version-root shortcut forward unauthenticated; the
rest needs an ``X-Auth-Token`` the master keystone accepts. Who may do what is the master's
decision, not the proxy's: keystone's and sysinv's policies answer (a 403 is relayed as is), so
self-service calls such as a user changing their own password work as they do directly. An
intercepted route is forwarded with its body buffered; if the master's status says the change
happened, its work orders are submitted *before* the client gets the answer. The rest streams
through untouched.

Only logged: method, path, status, a work order's type/operation/id and an internal error's
traceback, masked by :class:`~dcorch.proxy.redaction.RedactingFilter`.

Each intercepted command forwarded to the master counts once in ``dcorch_proxied_commands_total``
by endpoint type and outcome: ``committed`` (work recorded), ``rejected`` (by the master),
``unrecorded`` (no work order derivable), ``overloaded`` (503, sink full), ``timed_out`` (504,
deadline overrun) or ``failed`` (master unreachable, recording failed, internal error).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Sequence
from typing import cast

import httpx
import trio
from hypercorn.typing import HTTPScope
from quart import request
from quart_trio.wrappers import TrioResponse
from werkzeug.datastructures import Headers

from dcorch import constants as c
from dcorch.metrics import Metrics
from dcorch.proxy import forwarding as fw
from dcorch.proxy.auth import TokenCache
from dcorch.proxy.errors import (
    BodyTooLarge,
    Overloaded,
    ValidationUnavailable,
    error_response,
    keystone_error_response,
)
from dcorch.proxy.fernet_audit import FernetKeySource, extract_audit_id
from dcorch.proxy.interception import (
    Exchange,
    RouteMatch,
    UnusableExchange,
    build_work_orders,
    match_route,
)
from dcorch.proxy.redaction import RedactingFilter
from dcorch.proxy.routes import VERSION_ROOTS, Rid, RouteSpec
from dcorch.work import WorkOrder, WorkSink

logger = logging.getLogger(__name__)
logger.addFilter(RedactingFilter())

COMMITTED = "committed"
REJECTED = "rejected"
UNRECORDED = "unrecorded"
OVERLOADED = "overloaded"
TIMED_OUT = "timed_out"
FAILED = "failed"

OVERLOADED_MESSAGE = (
    "dcorch is overloaded: the change was applied at the System Controller but could not be "
    "queued for the subclouds; the periodic audit will propagate it"
)
SUBMIT_FAILED_MESSAGE = (
    "dcorch could not record the change for the subclouds (it was applied at the System "
    "Controller); the periodic audit will propagate it"
)


def relay_response(
    body: bytes | fw.UpstreamBody, status: int, headers: list[tuple[str, str]]
) -> TrioResponse:
    """The master's answer as a quart response, adding no Content-Type the master did not send."""
    response = TrioResponse(body, status=status, headers=Headers(headers))
    if not any(name.lower() == "content-type" for name, _ in headers):
        del response.headers["Content-Type"]
    return response


def _scope() -> HTTPScope:
    return cast(HTTPScope, request.scope)


def _headers() -> list[tuple[bytes, bytes]]:
    return list(_scope()["headers"])


class ProxyHandler:
    """Everything one proxy listener needs to handle a request; built by ``create_proxy_app``."""

    def __init__(
        self,
        *,
        endpoint_type: str,
        routes: Sequence[RouteSpec],
        ok_statuses: frozenset[int],
        stored_endpoint_type: str,
        upstream_url: str,
        work_sink: WorkSink,
        tokens: TokenCache,
        fernet_keys: FernetKeySource | None,
        forward_timeout: float,
        max_body_bytes: int,
        metrics: Metrics,
        client: httpx.AsyncClient,
    ) -> None:
        self.endpoint_type = endpoint_type
        self.routes = routes
        self.ok_statuses = ok_statuses
        self.stored_endpoint_type = stored_endpoint_type
        self.upstream = httpx.URL(upstream_url)
        self.sink = work_sink
        self.tokens = tokens
        self.fernet_keys = fernet_keys
        self.forward_timeout = forward_timeout
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.client = client
        """The client for the master (owned by the caller, who closes it)."""

    async def handle(self) -> TrioResponse:
        """Handle the current request (the quart request context is active)."""
        scope = _scope()
        method = scope["method"].upper()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        try:
            response = await self._dispatch(method, path)
        except httpx.TimeoutException:
            response = error_response(504, "the master service did not answer in time")
        except httpx.HTTPError as exc:
            logger.warning("%s %s: master unreachable (%s)", method, path, type(exc).__name__)
            response = error_response(502, "the master service is unreachable")
        except Exception:
            # Logged here, through the redacting filter: quart would print the exception text
            # (it may quote a body or a token) unmasked.
            logger.exception("%s %s: internal error", method, path)
            response = error_response(500, "internal error in the dcorch proxy")
        logger.info("%s %s -> %d", method, path, response.status_code)
        return response

    async def _dispatch(self, method: str, path: str) -> TrioResponse:
        headers = _headers()
        if fw.header(headers, b"user-header") == b"distcloud":
            return await self._pass_through(method)
        if method == "GET" and path in VERSION_ROOTS:
            return await self._pass_through(method)
        raw_token = fw.header(headers, b"x-auth-token")
        if not raw_token:
            return self._refuse(401, "Missing authentication token")
        token = raw_token.decode("latin-1")
        try:
            info = await self.tokens.validate(token)
        except ValidationUnavailable as exc:
            logger.warning("%s %s: token validation unavailable (%s)", method, path, exc)
            return error_response(503, "token validation is unavailable")
        if info is None:
            return self._refuse(401, "The request you have made requires authentication.")
        match = match_route(self.routes, method, path)
        if match is None:
            return await self._pass_through(method)
        return await self._intercept(method, path, match)

    def _refuse(self, status: int, message: str) -> TrioResponse:
        """The proxy's own 401, in the shape the clients of this endpoint type parse."""
        if self.endpoint_type == c.ENDPOINT_TYPE_IDENTITY:
            return keystone_error_response(status, message)
        return error_response(status, message)

    def _build_request(self, method: str, content: bytes | AsyncIterable[bytes]) -> httpx.Request:
        scope = _scope()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        client = scope.get("client")
        return httpx.Request(
            method,
            fw.upstream_url(self.upstream, raw_path, scope.get("query_string", b"")),
            headers=fw.upstream_headers(
                list(scope["headers"]),
                upstream=self.upstream,
                scheme=scope.get("scheme", "http"),
                client_address=client[0] if client else None,
                keep_content_length=not isinstance(content, bytes),
            ),
            content=content,
            extensions={"timeout": httpx.Timeout(self.forward_timeout).as_dict()},
        )

    async def _pass_through(self, method: str) -> TrioResponse:
        """Stream the request to the master and its answer back, touching nothing."""
        headers = _headers()
        has_body = fw.header(headers, b"transfer-encoding") is not None or fw.header(
            headers, b"content-length"
        ) not in (None, b"0")
        content = fw.non_empty(request.body) if has_body else b""
        upstream = await self.client.send(self._build_request(method, content), stream=True)
        return relay_response(
            fw.UpstreamBody(upstream),
            upstream.status_code,
            fw.client_headers(upstream.headers, streamed=True),
        )

    async def _intercept(self, method: str, path: str, match: RouteMatch) -> TrioResponse:
        headers = _headers()
        declared = fw.header(headers, b"content-length")
        try:
            with trio.fail_after(self.forward_timeout):
                body = await fw.read_capped(
                    request.body,
                    self.max_body_bytes,
                    int(declared) if declared and declared.isdigit() else None,
                )
        except BodyTooLarge as exc:
            return error_response(413, f"request body is larger than {exc.limit} bytes")
        except trio.TooSlowError:
            return error_response(408, "the request body did not arrive in time")
        subject = (fw.header(headers, b"x-subject-token") or b"").decode("latin-1")
        response: TrioResponse | None = None
        outcome = FAILED  # unless _forward_and_record returns: an exception is on its way up
        known_audit_id = None
        if match.action.rid is Rid.AUDIT_ID and subject and self.fernet_keys is None:
            known_audit_id = await self._audit_id_from_keystone(subject)
        try:
            # Once the request is on its way to the master, finish it and record the work even
            # if the client goes away; the deadline bounds how long a shutdown can be held up.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 2 * self.forward_timeout
                response, outcome = await self._forward_and_record(
                    method, path, match, body, subject, known_audit_id
                )
            if response is None:
                outcome = TIMED_OUT
        finally:
            self.metrics.proxied_commands.inc(endpoint_type=self.endpoint_type, outcome=outcome)
        if match.route.resource_type == c.RESOURCE_REVOKE_EVENTS and subject:
            self.tokens.forget(subject)
        if response is None:
            logger.error("%s %s: forwarding and recording timed out", method, path)
            return error_response(504, "the change could not be completed in time")
        return response

    async def _audit_id_from_keystone(self, subject: str) -> str | None:
        """A token's audit id from the master keystone, asked before it is revoked.

        For a master without sysinv (no fernet repository to decrypt it with): a valid token
        may validate itself, so this needs no admin; an invalid one has nothing to revoke.
        """
        try:
            info = await self.tokens.validate(subject)
        except ValidationUnavailable as exc:
            logger.warning("no audit id for the token to revoke: keystone unavailable (%s)", exc)
            return None
        return info.audit_ids[0] if info is not None and info.audit_ids else None

    async def _forward_and_record(
        self,
        method: str,
        path: str,
        match: RouteMatch,
        body: bytes,
        subject: str,
        known_audit_id: str | None = None,
    ) -> tuple[TrioResponse, str]:
        """The master's answer (or the proxy's 5xx) and the command's outcome for the metric."""
        upstream = await self.client.send(self._build_request(method, body), stream=True)
        raw = await fw.read_raw(upstream)
        status = upstream.status_code
        orders: list[WorkOrder] = []
        outcome = REJECTED
        if status in self.ok_statuses:
            outcome = UNRECORDED
            audit_id = known_audit_id
            if match.action.rid is Rid.AUDIT_ID and subject and self.fernet_keys is not None:
                # Only once keystone has revoked it: a token keystone refused to revoke needs no
                # key fetch. The keys come with dcorch's own credentials, so this works after
                # the client's token is gone and for a non-admin revoking its own token.
                audit_id = await extract_audit_id(subject, self.fernet_keys)
            content_type = fw.header(_headers(), b"content-type") or b""
            exchange = Exchange(
                request_body=body,
                request_content_type=content_type.decode("latin-1"),
                status=status,
                response_body=fw.decoded_body(raw, upstream.headers.get("content-encoding")),
                audit_id=audit_id,
            )
            try:
                orders = build_work_orders(
                    match,
                    exchange,
                    endpoint_type=self.stored_endpoint_type,
                    ok_statuses=self.ok_statuses,
                )
            except UnusableExchange as exc:
                logger.warning("%s %s -> %d: no work order (%s)", method, path, status, exc)
        if orders:
            try:
                await self.sink.submit(orders)
            except Overloaded as exc:
                logger.warning("%s %s: work sink overloaded, work not queued", method, path)
                return error_response(
                    503, OVERLOADED_MESSAGE, {"Retry-After": str(exc.retry_after)}
                ), OVERLOADED
            except Exception:
                # The traceback goes through the redacting filter like every proxy log line.
                logger.exception("%s %s: submitting work failed", method, path)
                return error_response(500, SUBMIT_FAILED_MESSAGE), FAILED
            outcome = COMMITTED
            for order in orders:
                logger.info(
                    "work order %s %s %s",
                    order.resource_type,
                    order.operation_type,
                    order.source_resource_id,
                )
        headers = fw.client_headers(upstream.headers, streamed=False)
        return relay_response(raw, status, headers), outcome
