"""The dcorch v1 REST API (docs/behaviour.md#dcorch-v1-api) plus what operators expect of a service.

Routes (all under ``/v1.0/<project_id>`` need a token the master keystone validates; a change,
any method but GET and HEAD, needs the admin role on the admin project: docs/behaviour.md):

- ``GET /`` version document, no token (any other method on ``/`` is 405)
- ``POST .../subclouds`` add (optionally with its service URLs and endpoint types),
  ``GET .../subclouds`` list with per-endpoint sync status
- ``GET|PUT|DELETE .../subclouds/<region>`` show, update states, IP or URLs, delete
- ``GET|PUT .../subclouds/<region>/initial-sync`` read (with the last failure) or re-request it
- ``GET .../subclouds/<region>/sync-status`` per-endpoint sync status
- ``GET .../subclouds/<region>/orch-requests?state=...`` pending or failed work, or
  (``state=completed``) the latest completed requests not purged yet, each with its ``result``
- ``GET /metrics`` Prometheus text, ``GET /health`` liveness with a database check and the
  master's health (200 ``degraded`` while a master service is down, 503 only when the database
  is unreachable: docs/behaviour.md#master-outage)
- ``GET /openapi.json`` the OpenAPI 3 description of all of the above (no token)

Errors are JSON ``{"error": <kind>, "detail": <what is wrong>}`` built in one place from
exceptions, so handlers read as the happy path. HTTP's own methods come from the route table:
``HEAD`` wherever ``GET`` is, ``OPTIONS`` everywhere (200 with ``Allow``), and a 405 names the
allowed methods in ``Allow`` (RFC 9110).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from dcorch import constants
from dcorch.api import validation
from dcorch.api.openapi import openapi_document
from dcorch.api.validation import BadRequest
from dcorch.db import errors as db_errors
from dcorch.lifecycle import InvalidInput, NotNow, SubcloudEvents, SubcloudLifecycle
from dcorch.metrics import Metrics
from dcorch.text import storable_text

logger = logging.getLogger(__name__)

VERSION_UPDATED = "2016-03-07"
COMPLETED_SHOWN = 100
"""How many of a subcloud's latest completed requests ``state=completed`` lists."""


class MasterHealthView(Protocol):
    """The engine's view of the master's services (``dcorch.remote.master_health``)."""

    def status(self) -> dict[str, Any]: ...


class BrokerHealthView(Protocol):
    """The RabbitMQ links of dcmanager's RPC (``dcorch.rpc.link.BrokerHealth``)."""

    def status(self) -> dict[str, Any]: ...


class InitialSyncFailures(Protocol):
    """Why a subcloud's last initial sync failed (the sync manager keeps it)."""

    def initial_sync_failure(self, region: str) -> dict[str, object] | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who a valid token belongs to, as far as the API's policy needs to know."""

    roles: frozenset[str]
    """Role names on the token's project, lower case."""
    project_name: str = ""
    """The project the token is scoped to (empty: not project scoped)."""
    project_domain_id: str = ""


class TokenCheckUnavailable(Exception):
    """The master keystone could not say whether a token is valid (answered 503)."""


TokenCheck = Callable[[str], Awaitable[Caller | None]]
"""The token's :class:`Caller`, or None when it is invalid, expired or revoked.

Raises :class:`TokenCheckUnavailable` when keystone gives no answer.
"""

ADMIN_ROLE = "admin"
"""What a change needs, on the admin project: the v1 API has no master whose policy decides."""
ADMIN_PROJECT_DOMAIN_ID = "default"
"""The admin project is keystone's default domain's (a domain admin may name a project admin)."""
PUBLIC_PATHS = frozenset({"/", "/health", "/metrics", "/openapi.json"})
"""Answered without a token (probes and scrapers carry none)."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Any valid token may read (HTTP's safe methods); every other method changes something and
needs the admin."""


def may_change(caller: Caller, admin_project: str) -> bool:
    """Upstream's rule for changes: the admin role on the admin project (docs/behaviour.md)."""
    return (
        ADMIN_ROLE in caller.roles
        and caller.project_name == admin_project
        and caller.project_domain_id == ADMIN_PROJECT_DOMAIN_ID
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _error(status: int, kind: str, detail: str) -> Response:
    response = jsonify({"error": kind, "detail": detail})
    response.status_code = status
    return response


def create_api_app(
    db: Any,
    *,
    token_check: TokenCheck,
    events: SubcloudEvents | None = None,
    metrics: Metrics | None = None,
    endpoint_types: Sequence[str] = constants.SYNC_ENDPOINT_TYPES,
    address_required: bool = False,
    master_health: MasterHealthView | None = None,
    initial_sync_failures: InitialSyncFailures | None = None,
    admin_project: str = "admin",
    lifecycle: SubcloudLifecycle | None = None,
    broker_health: BrokerHealthView | None = None,
    changes_refused: str | None = None,
) -> QuartTrio:
    """Build the dcorch v1 API app around a running database (``dcorch.db.Database``).

    Changes go through ``lifecycle``, the implementation the RPC front door shares; without one
    the API builds its own from ``events`` (who hears of changes), ``endpoint_types`` (what the
    System Controller syncs: a new subcloud's default, and what an add may choose from) and
    ``address_required`` (subcloud URLs come from a template on the management IP, so a subcloud
    needs one unless every service it uses is given a URL); see :class:`SubcloudLifecycle`.
    ``admin_project``: the project whose admins may change subclouds (``master.project_name``).
    ``broker_health``: the RPC broker links, shown by ``/health`` (degraded while one is down).
    ``changes_refused``: why the v1 API only reads (dcmanager's RPC drives the lifecycle): every
    change under ``/v1.0/`` is answered 405 with it.
    """
    changes = lifecycle or SubcloudLifecycle(
        db, events=events, endpoint_types=endpoint_types, address_required=address_required
    )
    app = QuartTrio("dcorch.api")
    series = metrics or Metrics()

    @app.before_request
    async def _authenticate() -> Response | None:
        if request.path in PUBLIC_PATHS:
            return None
        token = request.headers.get("X-Auth-Token", "")
        if not token:
            return _error(401, "unauthorized", "missing authentication token")
        try:
            caller = await token_check(token)
        except TokenCheckUnavailable as exc:
            return _error(503, "unavailable", f"cannot validate the token now: {exc}")
        if caller is None:
            return _error(401, "unauthorized", "invalid or expired authentication token")
        if request.method not in READ_METHODS and not may_change(caller, admin_project):
            return _error(
                403,
                "forbidden",
                f"{request.method} needs the {ADMIN_ROLE} role on project {admin_project} "
                "(domain Default)",
            )
        return None

    @app.url_value_preprocessor
    def _unstorable_region(endpoint: str | None, values: dict[str, Any] | None) -> None:
        # No subcloud has a name the database cannot even be asked about (PostgreSQL refuses a
        # NUL in a query: 500s found by ./just fuzz); such a name is simply not found.
        region = (values or {}).get("region")
        if isinstance(region, str) and not storable_text(region):
            raise db_errors.SubcloudNotFound(region)

    @app.before_request
    async def _read_only() -> Response | None:
        if changes_refused is None or request.method in READ_METHODS:
            return None
        if not request.path.startswith("/v1.0/"):
            return None
        response = _error(405, "method_not_allowed", changes_refused)
        response.headers["Allow"] = "GET, HEAD, OPTIONS"
        return response

    @app.after_request
    async def _request_id(response: Response) -> Response:
        response.headers["x-openstack-request-id"] = f"req-{uuid.uuid4()}"
        return response

    @app.errorhandler(InvalidInput)
    async def _bad_request(exc: InvalidInput) -> Response:
        return _error(400, "bad_request", str(exc))

    @app.errorhandler(NotNow)
    async def _not_now(exc: NotNow) -> Response:
        return _error(409, "conflict", str(exc))

    @app.errorhandler(db_errors.SubcloudNotFound)
    async def _not_found(exc: Exception) -> Response:
        return _error(404, "not_found", str(exc))

    @app.errorhandler(db_errors.SubcloudAlreadyExists)
    async def _conflict(exc: Exception) -> Response:
        return _error(409, "conflict", str(exc))

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        response = _error(
            exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), str(exc)
        )
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.get("/")
    async def _root() -> Response:
        href = request.host_url.rstrip("/") + "/v1.0/"
        return jsonify(
            {
                "versions": [
                    {
                        "status": "CURRENT",
                        "id": "v1.0",
                        "updated": VERSION_UPDATED,
                        "links": [{"rel": "self", "href": href}],
                    }
                ]
            }
        )

    @app.get("/health")
    async def _health() -> Response:
        try:
            counts = await db.count_requests_by_state()
        except Exception as exc:
            logger.warning("health.db_failed error=%s", type(exc).__name__)
            return _error(503, "unavailable", "database not reachable")
        body: dict[str, Any] = {"status": "ok", "orch_requests": counts}
        if master_health is not None:
            # A master outage is not this process's fault: restarting it would not help, so
            # liveness stays 200 and the body says what is degraded.
            master = master_health.status()
            body["master"] = master
            if master["status"] != "up":
                body["status"] = "degraded"
        if broker_health is not None:
            broker = broker_health.status()
            body["broker"] = broker
            if broker["status"] != "up":
                body["status"] = "degraded"
        return jsonify(body)

    @app.get("/openapi.json")
    async def _openapi() -> Response:
        return jsonify(
            openapi_document(
                request.host_url,
                endpoint_types=changes.endpoint_types,
                address_required=changes.address_required,
                read_only=changes_refused is not None,
            )
        )

    @app.get("/metrics")
    async def _metrics() -> Response:
        counts = await db.count_requests_by_state()
        from dcorch.metrics import Gauge

        by_state = Gauge(
            "dcorch_orch_requests",
            "live orch_request rows by state",
            lambda: [({"state": s}, float(n)) for s, n in sorted(counts.items())],
        )
        body = series.render(extra=[by_state])
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def _body(spec: validation.BodySpec) -> dict[str, Any]:
        raw = await request.get_data(as_text=False)
        assert isinstance(raw, bytes)
        return validation.check_fields(validation.parse_json_object(raw), spec)

    async def _subcloud_view(region: str) -> dict[str, Any]:
        subcloud = _subcloud_plain(await db.get_subcloud(region))
        syncs = await db.list_subcloud_syncs(region)
        subcloud["sync_status"] = {s.endpoint_type: _sync_view(s) for s in syncs}
        return dict(subcloud)

    @app.post("/v1.0/<project_id>/subclouds")
    async def _add(project_id: str) -> Response:
        body = await _body(validation.ADD_SUBCLOUD)
        row = await changes.add_subcloud(
            body["subcloud"],
            body.get("software_version", ""),
            body.get("management_ip"),
            endpoint_types=body.get("endpoint_types"),
            endpoints=body.get("endpoints"),
        )
        return jsonify({"added": {"subcloud": row.region_name}})

    @app.get("/v1.0/<project_id>/subclouds")
    async def _list(project_id: str) -> Response:
        subclouds = await db.list_subclouds()
        syncs = await db.list_subcloud_syncs()
        by_region: dict[str, dict[str, Any]] = {}
        for sync in syncs:
            by_region.setdefault(sync.subcloud_name, {})[sync.endpoint_type] = _sync_view(sync)
        views = []
        for subcloud in subclouds:
            view = _subcloud_plain(subcloud)
            view["sync_status"] = by_region.get(subcloud.region_name, {})
            views.append(view)
        return jsonify({"subclouds": views})

    @app.get("/v1.0/<project_id>/subclouds/<region>")
    async def _show(project_id: str, region: str) -> Response:
        return jsonify({"subcloud": await _subcloud_view(region)})

    @app.put("/v1.0/<project_id>/subclouds/<region>")
    async def _update(project_id: str, region: str) -> Response:
        body = await _body(validation.UPDATE_STATES)
        await changes.update_subcloud(
            region,
            sw_version=body.get("software_version"),
            management_ip=body.get("management_ip"),
            endpoints=body.get("endpoints"),
            management_state=body.get("management_state"),
            availability_status=body.get("availability_status"),
        )
        return jsonify({"subcloud": await _subcloud_view(region)})

    @app.delete("/v1.0/<project_id>/subclouds/<region>")
    async def _delete(project_id: str, region: str) -> Response:
        await changes.del_subcloud(region)
        return jsonify({"deleted": {"subcloud": region}})

    @app.get("/v1.0/<project_id>/subclouds/<region>/initial-sync")
    async def _initial_sync(project_id: str, region: str) -> Response:
        subcloud = await db.get_subcloud(region)
        failures = initial_sync_failures
        failure = failures.initial_sync_failure(region) if failures is not None else None
        return jsonify(
            {
                "subcloud": region,
                "initial_sync_state": subcloud.initial_sync_state,
                "last_error": failure,
            }
        )

    @app.put("/v1.0/<project_id>/subclouds/<region>/initial-sync")
    async def _request_initial_sync(project_id: str, region: str) -> Response:
        await _body(validation.INITIAL_SYNC)
        await changes.request_initial_sync(region)
        return jsonify({"subcloud": region, "initial_sync_state": "requested"})

    @app.get("/v1.0/<project_id>/subclouds/<region>/sync-status")
    async def _sync_status(project_id: str, region: str) -> Response:
        await db.get_subcloud(region)
        syncs = await db.list_subcloud_syncs(region)
        return jsonify(
            {"subcloud": region, "endpoints": {s.endpoint_type: _sync_view(s) for s in syncs}}
        )

    @app.get("/v1.0/<project_id>/subclouds/<region>/orch-requests")
    async def _orch_requests(project_id: str, region: str) -> Response:
        await db.get_subcloud(region)
        states = request.args.getlist("state") or list(constants.ORCH_REQUEST_PENDING_STATES)
        bad = sorted(set(states) - set(validation.ORCH_REQUEST_STATES))
        if bad:
            raise BadRequest(f"unknown state(s): {', '.join(bad)}")
        live = tuple(s for s in states if s != constants.ORCH_REQUEST_COMPLETED)
        found = []
        if live:
            for endpoint_type in constants.SYNC_ENDPOINT_TYPES:
                found += await db.pending_requests(region, endpoint_type, states=live)
        if constants.ORCH_REQUEST_COMPLETED in states:
            # Soft deleted on completion: only the latest, and only until the purge.
            found += await db.completed_requests(region, limit=COMPLETED_SHOWN)
        items = []
        for item in found:
            view = _plain(item)
            view.pop("resource_info", None)  # may hold passwords or keys
            items.append(view)
        items.sort(key=lambda v: v.get("id", 0))
        return jsonify({"subcloud": region, "orch_requests": items})

    return app


def _subcloud_plain(subcloud: Any) -> dict[str, Any]:
    """A subcloud row as JSON; ``endpoints`` lists only the URLs given for it."""
    view: dict[str, Any] = _plain(subcloud)
    view["endpoints"] = subcloud.endpoints.given()
    return view


def _sync_view(sync: Any) -> dict[str, Any]:
    return {
        "sync_request": sync.sync_request,
        "sync_status": sync.sync_status_reported,
        "audit_status": sync.audit_status,
        "last_audit_time": _plain(sync.last_audit_time),
    }
