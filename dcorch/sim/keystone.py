"""keystone v3 identity API subset: users, groups, projects, roles and role assignments.

Requests and answers have the real shapes and status codes (201 create, 204 delete and grant, 404
``Could not find user: <id>.``, 409 duplicate name in a domain, 400 malformed body, 401 no valid
token, 405 wrong method), so the proxy and the engine run as in production.
"""

from __future__ import annotations

import json

from dcorch.sim.endpoints import KEYSTONE
from dcorch.sim.http import KeystoneError, Request, Response, empty_response, json_response
from dcorch.sim.keystone_assign import (
    actor_roles,
    grant,
    group_users,
    list_domains,
    membership,
    role_assignments,
)
from dcorch.sim.keystone_auth import (
    UNAUTHORIZED,
    enforce,
    issue_token,
    revoke_events,
    revoke_token,
    validate_token,
    version_doc,
)
from dcorch.sim.keystone_policy import Target
from dcorch.sim.keystone_views import (
    PROJECT_COLUMNS,
    ROLE_COLUMNS,
    USER_COLUMNS,
    Params,
    body_of,
    check_unique,
    filters_of,
    get_or_404,
    listing,
    name_field,
    revoke_user_tokens,
    storable,
    view,
)
from dcorch.sim.records import (
    DEFAULT_DOMAIN_ID,
    NULL_DOMAIN,
    make_group,
    make_project,
    make_role,
    make_user,
    password_row,
)
from dcorch.sim.routes import Handler, RouteTable
from dcorch.sim.state import CloudState
from dcorch.sim.tokens import check_password, hash_password

# --- users ------------------------------------------------------------------------------------


def list_users(cloud: CloudState, req: Request, params: Params) -> Response:
    return listing(cloud, req, "user", filters_of(req, "name", "domain_id", "enabled"))


def create_user(cloud: CloudState, req: Request, params: Params) -> Response:
    body = body_of(req, "user")  # keystone validates the body before its policy check
    name = str(name_field(body, True))
    enforce(cloud, req, "identity:create_user")
    domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
    identity = cloud.identity
    check_unique(identity, "user", domain_id, name, "")
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        raise KeystoneError(400, "Invalid input for field 'password'.")
    extra = {k: v for k, v in body.items() if k not in USER_COLUMNS}
    rec = make_user(
        name,
        hash_password(password) if password else None,
        cloud.sim.wall_clock(),
        domain_id=domain_id,
        enabled=bool(body.get("enabled", True)),
        default_project_id=body.get("default_project_id"),
        extra=extra,
    )
    rec = identity.put("user", storable(identity, "user", rec))
    cloud.record(KEYSTONE, "create_user", id=rec["user"]["id"], name=name)
    return json_response(201, {"user": view("user", rec, req)})


def get_user(cloud: CloudState, req: Request, params: Params) -> Response:
    enforce(cloud, req, "identity:get_user", Target(user_id=params[0]))
    rec = get_or_404(cloud.identity, "user", params[0])
    return json_response(200, {"user": view("user", rec, req)})


def update_user(cloud: CloudState, req: Request, params: Params) -> Response:
    body = body_of(req, "user")
    enforce(cloud, req, "identity:update_user")
    identity = cloud.identity
    rec = get_or_404(identity, "user", params[0])
    user, local = dict(rec["user"]), dict(rec["local_user"])
    name = name_field(body, False)
    if name is not None:
        check_unique(identity, "user", user["domain_id"], name, params[0])
        local["name"] = name
    if "enabled" in body:
        user["enabled"] = bool(body["enabled"])
    if "default_project_id" in body:
        user["default_project_id"] = body["default_project_id"]
    extra = dict(json.loads(user["extra"] or "{}"))
    extra.update({k: v for k, v in body.items() if k not in USER_COLUMNS})
    user["extra"] = json.dumps(extra)
    passwords = rec["password"]
    if "password" in body:
        if not isinstance(body["password"], str):
            raise KeystoneError(400, "Invalid input for field 'password'.")
        passwords = [password_row(hash_password(body["password"]), cloud.sim.wall_clock())]
    new = {**rec, "user": user, "local_user": local, "password": passwords}
    new = identity.put("user", storable(identity, "user", new))
    if "password" in body or (rec["user"]["enabled"] and not user["enabled"]):
        revoke_user_tokens(cloud, params[0])
    cloud.record(KEYSTONE, "update_user", id=params[0], fields=sorted(body))
    return json_response(200, {"user": view("user", new, req)})


def delete_user(cloud: CloudState, req: Request, params: Params) -> Response:
    enforce(cloud, req, "identity:delete_user")
    get_or_404(cloud.identity, "user", params[0])
    cloud.identity.remove("user", params[0])
    cloud.record(KEYSTONE, "delete_user", id=params[0])
    return empty_response(204)


def change_password(cloud: CloudState, req: Request, params: Params) -> Response:
    """``POST /v3/users/{id}/password``: self-service, proven by the original password.

    Unenforced in keystone (a user whose password expired has no token): it does not look at
    the token at all. An unknown user or a wrong original password is a 401 (never a 404 that
    would confirm a user id); a disabled account is a 401 that says so, once the password is
    right. The change revokes the user's tokens, as keystone's does (``revoke_events_for_user``).
    """
    identity = cloud.identity
    body = body_of(req, "user")
    new, original = body.get("password"), body.get("original_password")
    if not isinstance(new, str) or not isinstance(original, str):
        raise KeystoneError(400, "'password' and 'original_password' are required.")
    if set(body) - {"password", "original_password"}:
        raise KeystoneError(400, "Additional properties are not allowed in 'user'.")
    rec = identity.users.get(params[0])
    if rec is None or not rec["password"]:
        raise KeystoneError(401, UNAUTHORIZED)
    if not check_password(original, rec["password"][-1]["password_hash"]):
        raise KeystoneError(401, UNAUTHORIZED)
    if not rec["user"]["enabled"]:
        raise KeystoneError(401, f"The account is disabled for user: {params[0]}.")
    row = password_row(hash_password(new), cloud.sim.wall_clock())
    row["self_service"] = True
    identity.put("user", {**rec, "password": [row]})
    revoke_user_tokens(cloud, params[0])
    cloud.record(KEYSTONE, "change_password", id=params[0])
    return empty_response(204)


def user_groups(cloud: CloudState, req: Request, params: Params) -> Response:
    enforce(cloud, req, "identity:list_groups_for_user", Target(user_id=params[0]))
    get_or_404(cloud.identity, "user", params[0])
    groups = [
        view("group", g, req)
        for g in cloud.identity.groups.values()
        if params[0] in g["local_user_ids"]
    ]
    return json_response(200, {"groups": groups, "links": {"self": req.base_url}})


# --- groups, projects, roles ------------------------------------------------------------------


def _create(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        body = body_of(req, kind)  # keystone validates the body before its policy check
        name = str(name_field(body, True))
        enforce(cloud, req, f"identity:create_{kind}")
        identity = cloud.identity
        if kind == "group":
            domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
            check_unique(identity, kind, domain_id, name, "")
            rec = make_group(name, domain_id=domain_id, description=body.get("description", ""))
        elif kind == "project":
            domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
            check_unique(identity, kind, domain_id, name, "")
            parent = body.get("parent_id")
            if parent is not None and parent != domain_id and parent not in identity.projects:
                raise KeystoneError(404, f"Could not find project: {parent}.")
            extra = {k: v for k, v in body.items() if k not in PROJECT_COLUMNS | {"tags"}}
            rec = make_project(
                name,
                domain_id=domain_id,
                parent_id=parent,
                extra=extra,
                description=body.get("description", ""),
                enabled=bool(body.get("enabled", True)),
            )
        else:
            domain_id = str(body.get("domain_id") or NULL_DOMAIN)
            check_unique(identity, kind, domain_id, name, "")
            extra = {k: v for k, v in body.items() if k not in ROLE_COLUMNS | {"options"}}
            rec = make_role(
                name,
                domain_id=body.get("domain_id"),
                extra=extra,
                description=body.get("description"),
            )
        rec = identity.put(kind, storable(identity, kind, rec))
        cloud.record(KEYSTONE, f"create_{kind}", id=rec[kind]["id"], name=name)
        return json_response(201, {kind: view(kind, rec, req)})

    return handler


def _target(cloud: CloudState, kind: str, oid: str) -> Target:
    """What keystone's get_project / get_role rules look at (a missing object: nothing)."""
    if kind == "project":
        return Target(project_id=oid)
    role = cloud.identity.roles.get(oid) if kind == "role" else None
    return Target(role_name=role["role"]["name"] if role is not None else None)


def _get_one(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        enforce(cloud, req, f"identity:get_{kind}", _target(cloud, kind, params[0]))
        return json_response(
            200, {kind: view(kind, get_or_404(cloud.identity, kind, params[0]), req)}
        )

    return handler


def _update(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        body = body_of(req, kind)
        enforce(cloud, req, f"identity:update_{kind}")
        identity = cloud.identity
        rec = get_or_404(identity, kind, params[0])
        inner = dict(rec[kind])
        name = name_field(body, False)
        if name is not None:
            check_unique(identity, kind, inner["domain_id"], name, params[0])
            inner["name"] = name
        if "description" in body:
            inner["description"] = body["description"]
        if kind == "project" and "enabled" in body:
            inner["enabled"] = bool(body["enabled"])
        if kind != "group":
            skip = {
                "id",
                "name",
                "description",
                "domain_id",
                "enabled",
                "parent_id",
                "is_domain",
                "options",
                "tags",
            }
            extra = dict(json.loads(inner["extra"] or "{}"))
            extra.update({k: v for k, v in body.items() if k not in skip})
            inner["extra"] = json.dumps(extra)
        new = identity.put(kind, storable(identity, kind, {**rec, kind: inner}))
        cloud.record(KEYSTONE, f"update_{kind}", id=params[0], fields=sorted(body))
        return json_response(200, {kind: view(kind, new, req)})

    return handler


def _delete(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        enforce(cloud, req, f"identity:delete_{kind}")
        get_or_404(cloud.identity, kind, params[0])
        cloud.identity.remove(kind, params[0])
        cloud.record(KEYSTONE, f"delete_{kind}", id=params[0])
        return empty_response(204)

    return handler


def list_groups(cloud: CloudState, req: Request, params: Params) -> Response:
    return listing(cloud, req, "group", filters_of(req, "name", "domain_id"))


def list_projects(cloud: CloudState, req: Request, params: Params) -> Response:
    return listing(cloud, req, "project", filters_of(req, "name", "domain_id", "parent_id"))


def list_roles(cloud: CloudState, req: Request, params: Params) -> Response:
    return listing(cloud, req, "role", filters_of(req, "name", "domain_id"))


ROUTES = RouteTable(KEYSTONE, KeystoneError)
ROUTES.add("", GET=version_doc)
ROUTES.add(
    "auth/tokens", POST=issue_token, GET=validate_token, HEAD=validate_token, DELETE=revoke_token
)
ROUTES.add("OS-REVOKE/events", GET=revoke_events)
ROUTES.add("domains", GET=list_domains)
ROUTES.add("users", GET=list_users, POST=create_user)
ROUTES.add("users/{}", GET=get_user, PATCH=update_user, DELETE=delete_user)
ROUTES.add("users/{}/password", POST=change_password)
ROUTES.add("users/{}/groups", GET=user_groups)
ROUTES.add("groups", GET=list_groups, POST=_create("group"))
ROUTES.add("groups/{}", GET=_get_one("group"), PATCH=_update("group"), DELETE=_delete("group"))
ROUTES.add("groups/{}/users", GET=group_users)
ROUTES.add("groups/{}/users/{}", PUT=membership, DELETE=membership, HEAD=membership)
ROUTES.add("projects", GET=list_projects, POST=_create("project"))
ROUTES.add(
    "projects/{}", GET=_get_one("project"), PATCH=_update("project"), DELETE=_delete("project")
)
ROUTES.add("roles", GET=list_roles, POST=_create("role"))
ROUTES.add("roles/{}", GET=_get_one("role"), PATCH=_update("role"), DELETE=_delete("role"))
for _actor in ("user", "group"):
    ROUTES.add(f"projects/{{}}/{_actor}s/{{}}/roles", GET=actor_roles(_actor))
    _grant = grant(_actor)
    ROUTES.add(
        f"projects/{{}}/{_actor}s/{{}}/roles/{{}}",
        PUT=_grant,
        DELETE=_grant,
        HEAD=_grant,
        GET=_grant,
    )
ROUTES.add("role_assignments", GET=role_assignments)
