"""Turn an intercepted request and the master's answer into work orders (pure functions).

The route table (:mod:`dcorch.proxy.routes`) says *what* each route produces, this module *how*
(ids from paths and JSON bodies, the ``resource_info`` text). No I/O, so every rule is unit-tested
directly; the caller passes in a revoked token's audit id (:mod:`dcorch.proxy.fernet_audit`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dcorch.proxy.routes import Action, Info, Rid, RouteSpec
from dcorch.work import WorkOrder


class UnusableExchange(Exception):
    """The master accepted the request but no work order can be derived from it.

    Quotes no body (secrets); the caller logs a warning and replies normally, as the real proxy did.
    """


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """An intercepted route matched by a request's method and path."""

    route: RouteSpec
    action: Action
    params: Mapping[str, str]
    """Named path parameters (``id``, ``project``, ``actor``, ``role``, ...)."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the mapping needs from one forwarded request and the master's reply."""

    request_body: bytes
    request_content_type: str
    status: int
    response_body: bytes
    """The master's body, already decoded from any Content-Encoding."""
    audit_id: str | None = None
    """The revoked token's audit id (token revocation only)."""


def match_route(routes: Sequence[RouteSpec], method: str, path: str) -> RouteMatch | None:
    """The intercepted route for ``method`` on ``path``, or ``None`` to pass the request through."""
    for route in routes:
        found = route.pattern.fullmatch(path)
        if found is None:
            continue
        action = route.actions.get(method.upper())
        if action is None:
            return None
        return RouteMatch(route, action, found.groupdict())
    return None


def build_work_orders(
    match: RouteMatch,
    exchange: Exchange,
    *,
    endpoint_type: str,
    ok_statuses: frozenset[int],
) -> list[WorkOrder]:
    """The work orders for one intercepted exchange; none if the status is not in ``ok_statuses``.

    Raises :class:`UnusableExchange` when the change happened but the id or the information
    cannot be derived (empty id, a body that is not JSON, no certificate signature).
    """
    if exchange.status not in ok_statuses:
        return []
    rids = _resource_ids(match, exchange)
    orders = []
    for rid in rids:
        info = _resource_info(match, exchange, rid)
        orders.append(
            WorkOrder(
                endpoint_type=endpoint_type,
                resource_type=match.route.resource_type,
                source_resource_id=rid,
                operation_type=match.action.operation,
                resource_info=info,
            )
        )
    return orders


def _resource_ids(match: RouteMatch, exchange: Exchange) -> list[str]:
    kind = match.action.rid
    if kind is Rid.PATH_ID:
        rids = [match.params.get("id") or ""]
    elif kind is Rid.ASSIGNMENT:
        parts = [match.params.get(name) or "" for name in ("project", "actor", "role")]
        rids = ["_".join(parts)] if all(parts) else [""]
    elif kind is Rid.RESPONSE_ID:
        rids = [_response_id(_json_object(exchange.response_body, "response"))]
    elif kind is Rid.AUDIT_ID:
        rids = [exchange.audit_id or ""]
    else:
        rids = _signatures(_json_object(exchange.response_body, "response"))
    if not rids or not all(rids):
        raise UnusableExchange(f"no source resource id ({kind.value})")
    return rids


def _response_id(body: Mapping[str, Any]) -> str:
    """``id`` of the first top-level object that has one (``{"user": {"id": ...}}``).

    Keystone answers a create with a single top-level object; skipping objects without an id
    (a ``links`` object, say) is more tolerant than upstream, which would have failed.
    """
    for value in body.values():
        if isinstance(value, Mapping):
            rid = value.get("id")
            if isinstance(rid, str) and rid:
                return rid
    return ""


def _signatures(body: Mapping[str, Any]) -> list[str]:
    """Certificate signatures from a sysinv reply.

    sysinv's ``certificate_install`` answers ``{"certificates": [<record>, ...]}``, one record
    per installed certificate (a CA bundle: several), each with its ``signature``; a single
    ``{"certificates": {...}}`` object is accepted too. A delete answers the deleted record
    (``{"signature": ...}``). Entries without a signature are skipped: a refused install answers
    200 with an ``error`` text and no certificate (a partly refused bundle: the ones installed).
    """
    certificates = body.get("certificates")
    if isinstance(certificates, Mapping):
        entries: list[Any] = [certificates]
    elif isinstance(certificates, list):
        entries = certificates
    else:
        entries = [body]
    signatures = []
    for entry in entries:
        signature = entry.get("signature") if isinstance(entry, Mapping) else None
        if isinstance(signature, str) and signature:
            signatures.append(signature)
    return signatures


def _resource_info(match: RouteMatch, exchange: Exchange, rid: str) -> str:
    kind = match.action.info
    if kind is Info.EMPTY:
        return "{}"
    if kind is Info.REQUEST_BODY:
        return _json_text(exchange.request_body)
    if kind is Info.REQUEST_BODY_OR_EMPTY:
        return _json_text(exchange.request_body) if exchange.request_body.strip() else "{}"
    if kind is Info.GROUP_REF:
        return json.dumps({"group": {"id": match.params["id"]}})
    if kind is Info.TOKEN_REVOKE_EVENT:
        return json.dumps({"token_revoke_event": {"audit_id": rid}})
    if kind is Info.MULTIPART_PAYLOAD:
        return json.dumps(
            {
                "payload": payload_text(exchange.request_body),
                "content_type": exchange.request_content_type,
            }
        )
    return json.dumps({"payload": _json_value(exchange.request_body, "request")})


def payload_text(body: bytes) -> str:
    """A raw (multipart) request body as text that survives JSON and converts back losslessly.

    Valid UTF-8 (PEM certificates, the normal case) decodes to itself. Other bytes become lone
    surrogates (``surrogateescape``) that ``json.dumps`` writes as ``\\udcXX`` escapes; the sync
    driver recovers the exact bytes with ``text.encode("utf-8", "surrogateescape")``.
    """
    return body.decode("utf-8", "surrogateescape")


def _json_text(body: bytes) -> str:
    """The request body as is, after checking it is JSON (``resource_info`` must be JSON).

    A body the master read but that is not plain UTF-8 JSON text (a UTF-8 BOM, UTF-16, the
    bytes of a lone surrogate: Python's ``json``, so keystone, reads them all) is stored
    re-serialised, so its change is recorded too: it was left to the next audit, found by
    ``./just fuzz`` as creates the subclouds never got.
    """
    try:
        text = body.decode("utf-8")
        json.loads(text)
        return text
    except (ValueError, RecursionError):  # also UnicodeDecodeError; too deep a nesting
        pass
    try:
        return json.dumps(json.loads(body))
    except (ValueError, RecursionError):
        raise UnusableExchange("request body is not JSON") from None


def _json_value(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; too deep a nesting
        raise UnusableExchange(f"{what} body is not JSON") from None


def _json_object(body: bytes, what: str) -> Mapping[str, Any]:
    value = _json_value(body, what)
    if not isinstance(value, Mapping):
        raise UnusableExchange(f"{what} body is not a JSON object")
    return value
