"""keystone v3 authentication: issue, validate and revoke tokens; the token check of every API.

Each simulated service accepts only tokens of *its own* cloud's keystone, signed with its current
fernet keys (as keystonemiddleware). So the engine authenticates per subcloud, and pushing new
fernet keys to a subcloud invalidates tokens signed with keys it no longer has.
"""

from __future__ import annotations

from typing import Any

from dcorch.sim.endpoints import DCDBSYNC, DCMANAGER, KEYSTONE, SERVICE_VERSIONS, SYSINV
from dcorch.sim.http import (
    HttpError,
    KeystoneError,
    Request,
    Response,
    empty_response,
    json_response,
)
from dcorch.sim.keystone_policy import Target, authorize
from dcorch.sim.records import (
    DEFAULT_DOMAIN_ID,
    DEFAULT_DOMAIN_NAME,
    Record,
    iso_z,
    make_revocation_event,
)
from dcorch.sim.state import CloudState
from dcorch.sim.tokens import TokenPayload, check_password

UNAUTHORIZED = "The request you have made requires authentication."


def domain_ref(ref: Any) -> str:
    """A ``{"id": ...}`` or ``{"name": ...}`` domain reference as a domain id."""
    if not isinstance(ref, dict):
        return DEFAULT_DOMAIN_ID
    if isinstance(ref.get("id"), str):
        return str(ref["id"])
    name = ref.get("name")
    if name is None or name == DEFAULT_DOMAIN_NAME:
        return DEFAULT_DOMAIN_ID
    return str(name)


def domain_view(domain_id: str) -> dict[str, str]:
    """``{"id", "name"}`` of a domain (only Default has a real name)."""
    return {
        "id": domain_id,
        "name": DEFAULT_DOMAIN_NAME if domain_id == DEFAULT_DOMAIN_ID else domain_id,
    }


def check_token(cloud: CloudState, token: str | None) -> TokenPayload | None:
    """Decode and vet a token against this cloud: keys, expiry, user, project, revocations."""
    if not token:
        return None
    payload = cloud.platform.codec.decode(token)
    if payload is None or payload.expires_at <= cloud.sim.wall_clock():
        return None
    identity = cloud.identity
    user = identity.users.get(payload.user_id)
    if user is None or not user["user"]["enabled"]:
        return None
    if payload.project_id is not None and payload.project_id not in identity.projects:
        return None
    if payload.audit_id in identity.revocations:
        return None
    # Fernet timestamps are whole seconds: a token of the same second as a per-user revocation
    # event survives it (errs on the side of keeping fresh tokens valid).
    for issued_before in identity.user_events.get(payload.user_id, {}).values():
        if payload.issued_at < int(issued_before):
            return None
    return payload


def require_token(cloud: CloudState, req: Request, error: type[HttpError]) -> TokenPayload:
    """The X-Auth-Token of a request, or a 401 in the calling service's error shape."""
    payload = check_token(cloud, req.header("x-auth-token"))
    if payload is None:
        raise error(401, UNAUTHORIZED)
    return payload


def enforce(
    cloud: CloudState, req: Request, action: str, target: Target | None = None
) -> TokenPayload:
    """The caller's token, if it is valid (else 401) and keystone's policy allows ``action``
    on ``target`` (else 403): what every enforced keystone API does first."""
    token = require_token(cloud, req, KeystoneError)
    authorize(cloud, token, action, target)
    return token


def version_doc(cloud: CloudState, req: Request, params: tuple[str, ...]) -> Response:
    """``GET /v3``: the version document (no token needed)."""
    return json_response(
        200,
        {
            "version": {
                "id": "v3.14",
                "status": "stable",
                "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": req.base_url + "/"}],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.identity-v3+json",
                    }
                ],
            }
        },
    )


def _find_user(cloud: CloudState, ref: Any) -> Record | None:
    identity = cloud.identity
    if not isinstance(ref, dict):
        raise KeystoneError(400, "auth.identity.password.user is required")
    if isinstance(ref.get("id"), str):
        return identity.users.get(ref["id"])
    if not isinstance(ref.get("name"), str):
        raise KeystoneError(400, "user id or name is required")
    return identity.find_name("user", domain_ref(ref.get("domain")), ref["name"])


def _scope_project(cloud: CloudState, scope: Any) -> str | None:
    if scope is None or scope == "unscoped":
        return None
    if not isinstance(scope, dict):
        raise KeystoneError(400, "invalid scope")
    project = scope.get("project")
    if project is None:
        return None
    if not isinstance(project, dict):
        raise KeystoneError(400, "invalid project scope")
    if isinstance(project.get("id"), str):
        if project["id"] not in cloud.identity.projects:
            raise KeystoneError(401, UNAUTHORIZED)
        return str(project["id"])
    name = project.get("name")
    if not isinstance(name, str):
        raise KeystoneError(400, "project id or name is required")
    rec = cloud.identity.find_name("project", domain_ref(project.get("domain")), name)
    if rec is None:
        raise KeystoneError(401, UNAUTHORIZED)
    return str(rec["project"]["id"])


def issue_token(cloud: CloudState, req: Request, params: tuple[str, ...]) -> Response:
    """``POST /v3/auth/tokens``: password or token authentication, optional project scope.

    A body not in keystone's shape (a string where an object belongs, say) is keystone's 400,
    not a crash (``./just fuzz``).
    """
    body = req.json(KeystoneError)
    try:
        return _issue_token(cloud, req, body)
    except (AttributeError, TypeError):
        raise KeystoneError(400, "Invalid input for field 'auth'.") from None


def _issue_token(cloud: CloudState, req: Request, body: Any) -> Response:
    try:
        identity_ref = body["auth"]["identity"]
        methods = identity_ref["methods"]
    except (KeyError, TypeError):
        raise KeystoneError(400, "auth.identity.methods is required") from None
    if not isinstance(methods, list) or not methods:
        raise KeystoneError(400, "auth.identity.methods must be a non-empty list")
    if "password" in methods:
        pw = identity_ref.get("password") or {}
        user = _find_user(cloud, pw.get("user"))
        password = (pw.get("user") or {}).get("password")
        if not isinstance(password, str):
            raise KeystoneError(400, "auth.identity.password.user.password is required")
        if user is None or not user["password"]:
            raise KeystoneError(401, UNAUTHORIZED)
        if not check_password(password, user["password"][-1]["password_hash"]):
            raise KeystoneError(401, UNAUTHORIZED)
    elif "token" in methods:
        old = check_token(cloud, (identity_ref.get("token") or {}).get("id"))
        if old is None:
            raise KeystoneError(401, UNAUTHORIZED)
        user = cloud.identity.users[old.user_id]
    else:
        raise KeystoneError(401, f"unsupported auth methods {methods}")
    if not user["user"]["enabled"]:
        raise KeystoneError(401, UNAUTHORIZED)
    user_id = user["user"]["id"]
    project_id = _scope_project(cloud, body["auth"].get("scope"))
    if project_id is not None and not cloud.identity.roles_of(user_id, project_id):
        raise KeystoneError(401, UNAUTHORIZED)
    now = cloud.sim.wall_clock()
    expires = now + cloud.sim.token_ttl
    token, audit = cloud.platform.codec.issue(user_id, methods, project_id, expires, now)
    payload = TokenPayload(user_id, methods, project_id, expires, audit, float(int(now)))
    view = token_view(cloud, req, payload, catalog="nocatalog" not in req.query)
    return json_response(201, view, [(b"x-subject-token", token.encode())])


def token_view(
    cloud: CloudState, req: Request, p: TokenPayload, *, catalog: bool
) -> dict[str, Any]:
    """The ``{"token": {...}}`` body keystone returns on issue and validation."""
    identity = cloud.identity
    user = identity.users[p.user_id]
    body: dict[str, Any] = {
        "methods": p.methods,
        "user": {
            "id": p.user_id,
            "name": user["local_user"]["name"],
            "domain": domain_view(user["user"]["domain_id"]),
            "password_expires_at": None,
        },
        "audit_ids": [p.audit_id],
        "expires_at": iso_z(p.expires_at),
        "issued_at": iso_z(p.issued_at),
    }
    if p.project_id is not None:
        project = identity.projects[p.project_id]["project"]
        body["project"] = {
            "id": project["id"],
            "name": project["name"],
            "domain": domain_view(project["domain_id"]),
        }
        body["is_domain"] = False
        body["roles"] = [
            {"id": r, "name": identity.roles[r]["role"]["name"]}
            for r in identity.roles_of(p.user_id, p.project_id)
        ]
        if catalog:
            body["catalog"] = service_catalog(cloud, req)
    return {"token": body}


def service_catalog(cloud: CloudState, req: Request) -> list[dict[str, Any]]:
    """This cloud's endpoints (under the simulator's path prefixes)."""
    if cloud.is_master:
        root = f"{req.server_url}/master"
        services = [
            (KEYSTONE, "identity"),
            (SYSINV, "platform"),
            (DCDBSYNC, "dcorch-dbsync"),
            (DCMANAGER, "dcmanager"),
        ]
    else:
        root = f"{req.server_url}/subclouds/{cloud.region}"
        services = [(KEYSTONE, "identity"), (SYSINV, "platform"), (DCDBSYNC, "dcorch-dbsync")]
    catalog = []
    for name, stype in services:
        url = f"{root}/{name}/{SERVICE_VERSIONS[name]}"
        endpoints = [
            {
                "id": f"{cloud.region}-{name}-{iface}",
                "interface": iface,
                "region": cloud.region,
                "region_id": cloud.region,
                "url": url,
            }
            for iface in ("public", "internal", "admin")
        ]
        catalog.append(
            {"id": f"{cloud.region}-{name}", "name": name, "type": stype, "endpoints": endpoints}
        )
    return catalog


def _subject(cloud: CloudState, req: Request, action: str) -> tuple[str, TokenPayload]:
    """The X-Subject-Token, once the caller may act on it.

    In keystone's order: the caller's token (401), the subject (404), then the policy (403),
    whose "token subject" rule lets every user validate and revoke their own tokens.
    """
    caller = require_token(cloud, req, KeystoneError)
    token = req.header("x-subject-token")
    subject = check_token(cloud, token)
    if token is None or subject is None:
        raise KeystoneError(404, "Failed to validate token")
    authorize(cloud, caller, action, Target(subject_user_id=subject.user_id))
    return token, subject


def validate_token(cloud: CloudState, req: Request, params: tuple[str, ...]) -> Response:
    """``GET /v3/auth/tokens`` (200 + body) and ``HEAD`` (200 without body); 404 if invalid."""
    action = "identity:check_token" if req.method == "HEAD" else "identity:validate_token"
    token, subject = _subject(cloud, req, action)
    headers = [(b"x-subject-token", token.encode())]
    if req.method == "HEAD":
        return empty_response(200, headers)
    view = token_view(cloud, req, subject, catalog="nocatalog" not in req.query)
    return json_response(200, view, headers)


def revoke_token(cloud: CloudState, req: Request, params: tuple[str, ...]) -> Response:
    """``DELETE /v3/auth/tokens``: record a revocation event for the token's audit id."""
    _, subject = _subject(cloud, req, "identity:revoke_token")
    identity = cloud.identity
    event = make_revocation_event(
        identity.next_event_id,
        cloud.sim.wall_clock(),
        audit_id=subject.audit_id,
        issued_before=subject.issued_at,
    )
    identity.next_event_id += 1
    identity.add_revocation(subject.audit_id, event)
    cloud.record(KEYSTONE, "revoke_token", audit_id=subject.audit_id)
    return empty_response(204)


def revoke_events(cloud: CloudState, req: Request, params: tuple[str, ...]) -> Response:
    """``GET /v3/OS-REVOKE/events``: keystone's own view of the revocation list."""
    enforce(cloud, req, "identity:list_revoke_events")
    events = [
        {k: v for k, v in e.items() if v is not None and k != "id"}
        for e in cloud.identity.revocations.values()
    ]
    return json_response(200, {"events": events, "links": {"self": req.base_url}})
