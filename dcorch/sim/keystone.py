"""keystone v3 identity API subset: users, groups, projects, roles and role assignments.

Requests and answers have the real service's shapes and status codes (201 on create, 204 on
delete and grant, 404 ``Could not find user: <id>.``, 409 on a duplicate name in a domain, 400
on a malformed body, 401 without a valid token, 405 on a wrong method), so both the dcorch proxy
(which forwards master calls and inspects the answers) and the engine (which writes to
subclouds) are exercised as in production.
"""

from __future__ import annotations

import json
from typing import Any, Final

from dcorch.sim.endpoints import KEYSTONE
from dcorch.sim.http import KeystoneError, Request, Response, empty_response, json_response
from dcorch.sim.keystone_auth import (
    domain_view,
    issue_token,
    require_token,
    revoke_events,
    revoke_token,
    validate_token,
    version_doc,
)
from dcorch.sim.records import (
    DEFAULT_DOMAIN_ID,
    NULL_DOMAIN,
    Record,
    make_group,
    make_project,
    make_revocation_event,
    make_role,
    make_user,
    password_row,
    user_event_id,
)
from dcorch.sim.routes import Handler, RouteTable
from dcorch.sim.state import CloudState, Identity
from dcorch.sim.tokens import check_password, hash_password

Params = tuple[str, ...]
PLURAL: Final = {"user": "users", "group": "groups", "project": "projects", "role": "roles"}
USER_COLUMNS: Final = {"id", "name", "domain_id", "enabled", "default_project_id", "password"}
PROJECT_COLUMNS: Final = {
    "id",
    "name",
    "domain_id",
    "enabled",
    "description",
    "parent_id",
    "is_domain",
}
ROLE_COLUMNS: Final = {"id", "name", "domain_id", "description"}


def view(kind: str, rec: Record, req: Request) -> dict[str, Any]:
    """The keystone API representation of a record."""
    if kind == "user":
        u = rec["user"]
        out = dict(json.loads(u["extra"] or "{}"))
        out.update(
            id=u["id"],
            name=rec["local_user"]["name"],
            domain_id=u["domain_id"],
            enabled=u["enabled"],
            password_expires_at=None,
            options={},
        )
        if u["default_project_id"]:
            out["default_project_id"] = u["default_project_id"]
    elif kind == "group":
        g = rec["group"]
        out = {
            "id": g["id"],
            "name": g["name"],
            "domain_id": g["domain_id"],
            "description": g["description"],
        }
    elif kind == "project":
        p = rec["project"]
        out = dict(json.loads(p["extra"] or "{}"))
        out.update({k: p[k] for k in PROJECT_COLUMNS}, tags=[], options={})
    else:
        r = rec["role"]
        out = dict(json.loads(r["extra"] or "{}"))
        out.update(
            id=r["id"],
            name=r["name"],
            description=r["description"],
            options={},
            domain_id=None if r["domain_id"] == NULL_DOMAIN else r["domain_id"],
        )
    out["links"] = {"self": f"{req.base_url}/{PLURAL[kind]}/{out['id']}"}
    return out


def _body(req: Request, key: str) -> dict[str, Any]:
    body = req.json(KeystoneError)
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise KeystoneError(400, f"Invalid input for field '{key}': a JSON object is required.")
    return dict(body[key])


def _get(identity: Identity, kind: str, oid: str) -> Record:
    rec = identity.tables[kind].get(oid)
    if rec is None:
        raise KeystoneError(404, f"Could not find {kind}: {oid}.")
    return rec


def _name(body: dict[str, Any], required: bool) -> str | None:
    name = body.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip():
        raise KeystoneError(400, "Invalid input for field 'name': a non-empty string is required.")
    return name


def _check_unique(identity: Identity, kind: str, domain_id: str, name: str, oid: str) -> None:
    other = identity.names.get((kind, domain_id, name))
    if other is not None and other != oid:
        raise KeystoneError(
            409,
            f"Conflict occurred attempting to store {kind} - Duplicate "
            f"entry found with name {name} at domain ID {domain_id}.",
        )


def _listing(cloud: CloudState, req: Request, kind: str, filters: dict[str, str]) -> Response:
    require_token(cloud, req, KeystoneError)
    items = [view(kind, r, req) for r in cloud.identity.tables[kind].values()]
    for key, wanted in filters.items():
        items = [i for i in items if str(i.get(key)) == wanted]
    links = {"self": f"{req.base_url}/{PLURAL[kind]}", "next": None, "previous": None}
    return json_response(200, {PLURAL[kind]: items, "links": links})


def _filters(req: Request, *keys: str) -> dict[str, str]:
    return {k: req.query[k] for k in keys if k in req.query}


def _revoke_user_tokens(cloud: CloudState, user_id: str) -> None:
    # keystone revokes a user's tokens when the password changes or the user is disabled;
    # dcorch syncs these per-user events as revoke_events_for_user
    identity = cloud.identity
    now = cloud.sim.wall_clock()
    event = make_revocation_event(identity.next_event_id, now, user_id=user_id)
    identity.next_event_id += 1
    identity.add_revocation(user_event_id(user_id, event["issued_before"]), event, now)


# --- users ------------------------------------------------------------------------------------


def list_users(cloud: CloudState, req: Request, params: Params) -> Response:
    return _listing(cloud, req, "user", _filters(req, "name", "domain_id", "enabled"))


def create_user(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    body = _body(req, "user")
    name = str(_name(body, True))
    domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
    identity = cloud.identity
    _check_unique(identity, "user", domain_id, name, "")
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
    rec = identity.put("user", rec)
    cloud.record(KEYSTONE, "create_user", id=rec["user"]["id"], name=name)
    return json_response(201, {"user": view("user", rec, req)})


def get_user(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    rec = _get(cloud.identity, "user", params[0])
    return json_response(200, {"user": view("user", rec, req)})


def update_user(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    identity = cloud.identity
    rec = _get(identity, "user", params[0])
    body = _body(req, "user")
    user, local = dict(rec["user"]), dict(rec["local_user"])
    name = _name(body, False)
    if name is not None:
        _check_unique(identity, "user", user["domain_id"], name, params[0])
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
    new = identity.put("user", {"user": user, "local_user": local, "password": passwords})
    if "password" in body or (rec["user"]["enabled"] and not user["enabled"]):
        _revoke_user_tokens(cloud, params[0])
    cloud.record(KEYSTONE, "update_user", id=params[0], fields=sorted(body))
    return json_response(200, {"user": view("user", new, req)})


def delete_user(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    _get(cloud.identity, "user", params[0])
    cloud.identity.remove("user", params[0])
    cloud.record(KEYSTONE, "delete_user", id=params[0])
    return empty_response(204)


def change_password(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    identity = cloud.identity
    rec = _get(identity, "user", params[0])
    body = _body(req, "user")
    new, original = body.get("password"), body.get("original_password")
    if not isinstance(new, str) or not isinstance(original, str):
        raise KeystoneError(400, "'password' and 'original_password' are required.")
    if not rec["password"] or not check_password(original, rec["password"][-1]["password_hash"]):
        raise KeystoneError(401, "The request you have made requires authentication.")
    row = password_row(hash_password(new), cloud.sim.wall_clock())
    row["self_service"] = True
    identity.put("user", {**rec, "password": [row]})
    _revoke_user_tokens(cloud, params[0])
    cloud.record(KEYSTONE, "change_password", id=params[0])
    return empty_response(204)


def user_groups(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    _get(cloud.identity, "user", params[0])
    groups = [
        view("group", g, req)
        for g in cloud.identity.groups.values()
        if params[0] in g["local_user_ids"]
    ]
    return json_response(200, {"groups": groups, "links": {"self": req.base_url}})


# --- groups, projects, roles ------------------------------------------------------------------


def _create(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        body = _body(req, kind)
        name = str(_name(body, True))
        identity = cloud.identity
        if kind == "group":
            domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
            _check_unique(identity, kind, domain_id, name, "")
            rec = make_group(name, domain_id=domain_id, description=body.get("description", ""))
        elif kind == "project":
            domain_id = str(body.get("domain_id") or DEFAULT_DOMAIN_ID)
            _check_unique(identity, kind, domain_id, name, "")
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
            _check_unique(identity, kind, domain_id, name, "")
            extra = {k: v for k, v in body.items() if k not in ROLE_COLUMNS | {"options"}}
            rec = make_role(
                name,
                domain_id=body.get("domain_id"),
                extra=extra,
                description=body.get("description"),
            )
        rec = identity.put(kind, rec)
        cloud.record(KEYSTONE, f"create_{kind}", id=rec[kind]["id"], name=name)
        return json_response(201, {kind: view(kind, rec, req)})

    return handler


def _get_one(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        return json_response(200, {kind: view(kind, _get(cloud.identity, kind, params[0]), req)})

    return handler


def _update(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        identity = cloud.identity
        rec = _get(identity, kind, params[0])
        body = _body(req, kind)
        inner = dict(rec[kind])
        name = _name(body, False)
        if name is not None:
            _check_unique(identity, kind, inner["domain_id"], name, params[0])
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
        new = identity.put(kind, {**rec, kind: inner})
        cloud.record(KEYSTONE, f"update_{kind}", id=params[0], fields=sorted(body))
        return json_response(200, {kind: view(kind, new, req)})

    return handler


def _delete(kind: str) -> Handler:
    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        _get(cloud.identity, kind, params[0])
        cloud.identity.remove(kind, params[0])
        cloud.record(KEYSTONE, f"delete_{kind}", id=params[0])
        return empty_response(204)

    return handler


def list_groups(cloud: CloudState, req: Request, params: Params) -> Response:
    return _listing(cloud, req, "group", _filters(req, "name", "domain_id"))


def list_projects(cloud: CloudState, req: Request, params: Params) -> Response:
    return _listing(cloud, req, "project", _filters(req, "name", "domain_id", "parent_id"))


def list_roles(cloud: CloudState, req: Request, params: Params) -> Response:
    return _listing(cloud, req, "role", _filters(req, "name", "domain_id"))


def group_users(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    group = _get(cloud.identity, "group", params[0])
    users = [
        view("user", cloud.identity.users[u], req)
        for u in group["local_user_ids"]
        if u in cloud.identity.users
    ]
    return json_response(200, {"users": users, "links": {"self": req.base_url}})


def membership(cloud: CloudState, req: Request, params: Params) -> Response:
    """PUT / DELETE / HEAD ``/v3/groups/{g}/users/{u}``."""
    require_token(cloud, req, KeystoneError)
    identity = cloud.identity
    group = _get(identity, "group", params[0])
    _get(identity, "user", params[1])
    members: list[str] = group["local_user_ids"]
    is_member = params[1] in members
    if req.method in {"HEAD", "GET"} or (req.method == "DELETE" and not is_member):
        if not is_member:
            raise KeystoneError(404, f"User {params[1]} is not a member of group {params[0]}.")
        return empty_response(204)
    if req.method == "PUT":
        members = sorted({*members, params[1]})
    else:
        members = [m for m in members if m != params[1]]
    identity.put("group", {**group, "local_user_ids": members})
    cloud.record(KEYSTONE, f"{req.method.lower()}_group_member", group=params[0], user=params[1])
    return empty_response(204)


# --- role assignments -------------------------------------------------------------------------


def grant(actor_type: str) -> Handler:
    """PUT / DELETE / HEAD / GET ``/v3/projects/{p}/<actor_type>s/{a}/roles/{r}``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        identity = cloud.identity
        project, actor, role = params
        _get(identity, "project", project)
        _get(identity, actor_type, actor)
        _get(identity, "role", role)
        key = (project, actor_type, actor, role)
        if req.method == "PUT":
            identity.assignments.add(key)
            cloud.record(KEYSTONE, "grant", assignment="_".join((project, actor, role)))
            return empty_response(204)
        if key not in identity.assignments:
            raise KeystoneError(
                404,
                f"Could not find role assignment with role: {role}, "
                f"{actor_type}: {actor}, project: {project}.",
            )
        if req.method == "DELETE":
            identity.assignments.discard(key)
            cloud.record(KEYSTONE, "revoke", assignment="_".join((project, actor, role)))
        return empty_response(204)

    return handler


def actor_roles(actor_type: str) -> Handler:
    """GET ``/v3/projects/{p}/<actor_type>s/{a}/roles``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, KeystoneError)
        identity = cloud.identity
        _get(identity, "project", params[0])
        _get(identity, actor_type, params[1])
        roles = [
            view("role", identity.roles[a[3]], req)
            for a in sorted(identity.assignments)
            if a[:3] == (params[0], actor_type, params[1])
        ]
        return json_response(200, {"roles": roles, "links": {"self": req.base_url}})

    return handler


def role_assignments(cloud: CloudState, req: Request, params: Params) -> Response:
    """GET ``/v3/role_assignments`` with scope.project.id / user.id / group.id / role.id."""
    require_token(cloud, req, KeystoneError)
    identity = cloud.identity
    q = req.query
    names = "include_names" in q and q["include_names"].lower() not in {"0", "false"}
    out = []
    for project, actor_type, actor, role in sorted(identity.assignments):
        if (
            q.get("scope.project.id", project) != project
            or q.get("role.id", role) != role
            or ("user.id" in q and (actor_type, actor) != ("user", q["user.id"]))
            or ("group.id" in q and (actor_type, actor) != ("group", q["group.id"]))
        ):
            continue
        entry: dict[str, Any] = {
            "role": {"id": role},
            actor_type: {"id": actor},
            "scope": {"project": {"id": project}},
            "links": {
                "assignment": f"{req.base_url}/projects/{project}/{actor_type}s/{actor}"
                f"/roles/{role}"
            },
        }
        if names:
            _add_names(identity, entry, actor_type)
        out.append(entry)
    return json_response(200, {"role_assignments": out, "links": {"self": req.base_url}})


def _add_names(identity: Identity, entry: dict[str, Any], actor_type: str) -> None:
    role = identity.roles[entry["role"]["id"]]["role"]
    entry["role"]["name"] = role["name"]
    actor = identity.tables[actor_type][entry[actor_type]["id"]]
    if actor_type == "user":
        entry["user"].update(
            name=actor["local_user"]["name"], domain=domain_view(actor["user"]["domain_id"])
        )
    else:
        entry["group"].update(
            name=actor["group"]["name"], domain=domain_view(actor["group"]["domain_id"])
        )
    project = identity.projects[entry["scope"]["project"]["id"]]["project"]
    entry["scope"]["project"].update(name=project["name"], domain=domain_view(project["domain_id"]))


def list_domains(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, KeystoneError)
    domain = {
        **domain_view(DEFAULT_DOMAIN_ID),
        "enabled": True,
        "description": "The default domain",
    }
    return json_response(200, {"domains": [domain], "links": {"self": req.base_url}})


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
