"""The DB-sync agent's HTTP API: dcdbsync v1.0's identity routes over a keystone database.

Routes (``docs/dbsync.md#routes``; every one but the version documents needs an admin token of
the keystone beside the agent):

- ``GET /``, ``GET /v1.0``: version documents, no token
- ``GET|POST /v1.0/identity/<users|groups|projects|roles>/``: list, create with the given id
- ``GET|PUT /v1.0/identity/<kind>/<id>``: one record; replace it, id included
- ``GET|POST /v1.0/identity/token-revocation-events/``: list, create
- ``GET|DELETE /v1.0/identity/token-revocation-events/audits/<audit_id>``
- ``GET|DELETE /v1.0/identity/token-revocation-events/users/<b64 "<user_id>_<issued_before>">``

Refusals of the token check (401, 403, 503 when keystone cannot be asked) are in keystone's
shape, as keystonemiddleware in front of upstream's dcdbsync answers them; the API's own errors
(400, 404, 405, 409, 413, 500, 503) in pecan's ``{"error_message": ...}``, as upstream's
controllers and the simulator answer them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from dcorch.dbsync.contract import RecordError
from dcorch.dbsync.store import KeystoneStore, StoreUnavailable
from dcorch.proxy.auth import TokenValidator
from dcorch.proxy.errors import ValidationUnavailable, error_response, keystone_error_response
from dcorch.text import storable_text

logger = logging.getLogger(__name__)

VERSION = "v1.0"
UNAUTHORIZED = "The request you have made requires authentication."
FORBIDDEN = "You are not authorized to perform the requested action: admin role required."
OPEN_PATHS = frozenset({"/", "/v1.0", "/v1.0/"})
ADMIN_ROLE = "admin"
"""The role a caller's token must carry: the agent writes keystone's tables behind its policy, so
it is the one check (as upstream's dcdbsync requires an admin context for its writes)."""


def _json(status: int, payload: Any) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json")


def create_dbsync_app(
    store: KeystoneStore,
    tokens: TokenValidator,
    *,
    keystone_url: str,
    max_body_bytes: int,
) -> QuartTrio:
    """The agent's app over a running store; ``tokens`` checks callers against keystone."""
    app = QuartTrio("dcorch.dbsync")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    @app.before_request
    async def _authenticate() -> Response | None:
        if request.path in OPEN_PATHS:
            return None
        token = request.headers.get("X-Auth-Token", "")
        try:
            info = await tokens.validate(token) if token else None
        except ValidationUnavailable as exc:
            logger.warning("dbsync.token_check_unavailable keystone=%s error=%s", keystone_url, exc)
            return keystone_error_response(503, "The token could not be validated.")
        if info is None:
            refusal = keystone_error_response(401, UNAUTHORIZED)
            refusal.headers["WWW-Authenticate"] = f'Keystone uri="{keystone_url}"'
            return refusal
        if ADMIN_ROLE not in info.roles:
            return keystone_error_response(403, FORBIDDEN)
        return None

    @app.url_value_preprocessor
    def _unstorable_id(endpoint: str | None, values: dict[str, Any] | None) -> None:
        # No record has an id the database cannot even be asked about (PostgreSQL refuses a
        # NUL in a query: 500s found by ./just fuzz); such an id is simply not found.
        for name in ("oid", "ref"):
            value = (values or {}).get(name)
            if isinstance(value, str) and not storable_text(value):
                raise RecordError(404, f"the resource could not be found: {request.path}")

    @app.after_request
    async def _log(response: Response) -> Response:
        level = logging.DEBUG if request.method == "GET" else logging.INFO
        logger.log(
            level,
            "dbsync.request method=%s path=%s status=%d",
            request.method,
            request.path,
            response.status_code,
        )
        return response

    @app.errorhandler(RecordError)
    async def _refused(exc: RecordError) -> Response:
        return error_response(exc.status, exc.message)

    @app.errorhandler(StoreUnavailable)
    async def _unavailable(exc: StoreUnavailable) -> Response:
        logger.warning("dbsync.database_unavailable error=%s", exc)
        return error_response(503, "the keystone database is unavailable")

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        # The unit's transaction was rolled back: nothing of the call was stored.
        logger.exception("dbsync.internal_error method=%s path=%s", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); nothing was changed")

    async def _body() -> Any:
        raw = await request.get_data(as_text=False)
        if not raw:
            raise RecordError(400, "Body required")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: too deep
            raise RecordError(400, "Request body decoding error") from None

    @app.get("/")
    async def _versions() -> Response:
        href = request.host_url.rstrip("/") + f"/{VERSION}"
        return _json(200, {"versions": [{"id": VERSION, "status": "CURRENT", "href": href}]})

    @app.get("/v1.0", strict_slashes=False)
    async def _version() -> Response:
        return _json(200, {"version": {"id": VERSION, "status": "CURRENT"}})

    @app.route(
        "/v1.0/identity/token-revocation-events/", methods=["GET", "POST"], strict_slashes=False
    )
    async def _events() -> Response:
        if request.method == "POST":
            return _json(201, await store.create_event(await _body()))
        return _json(200, await store.list_events())

    @app.route("/v1.0/identity/token-revocation-events/<by>/<ref>", methods=["GET", "DELETE"])
    async def _event(by: str, ref: str) -> Response:
        if by not in ("audits", "users"):
            raise RecordError(404, f"the resource could not be found: {request.path}")
        if request.method == "DELETE":
            await store.delete_event(by, ref)
            return Response("", status=204)
        return _json(200, await store.get_event(by, ref))

    @app.route("/v1.0/identity/<kind>/", methods=["GET", "POST"], strict_slashes=False)
    async def _collection(kind: str) -> Response:
        if request.method == "POST":
            return _json(201, await store.create_record(kind, await _body()))
        return _json(200, await store.list_records(kind))

    @app.route("/v1.0/identity/<kind>/<oid>", methods=["GET", "PUT"])
    async def _record(kind: str, oid: str) -> Response:
        if request.method == "PUT":
            return _json(200, await store.replace_record(kind, oid, await _body()))
        return _json(200, await store.get_record(kind, oid))

    return app
