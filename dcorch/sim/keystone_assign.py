"""keystone group membership, project role assignments and the domain list.

Grants are ``(project, actor_type, actor, role)`` tuples in a set (O(1) grant, check, revoke);
``GET /v3/role_assignments`` filters it; ``include_names`` adds the names the audit compares.
"""

from __future__ import annotations

from typing import Any, Final

from dcorch.sim.endpoints import KEYSTONE
from dcorch.sim.http import KeystoneError, Request, Response, empty_response, json_response
from dcorch.sim.keystone_auth import domain_view, enforce
from dcorch.sim.keystone_views import Params, get_or_404, view
from dcorch.sim.records import (
    DEFAULT_DOMAIN_ID,
)
from dcorch.sim.routes import Handler
from dcorch.sim.state import CloudState, Identity

MEMBERSHIP_ACTIONS: Final = {
    "PUT": "identity:add_user_to_group",
    "DELETE": "identity:remove_user_from_group",
}
GRANT_ACTIONS: Final = {"PUT": "identity:create_grant", "DELETE": "identity:revoke_grant"}
"""Policy actions by method; HEAD and GET are the checks (``check_user_in_group``,
``check_grant``)."""


def group_users(cloud: CloudState, req: Request, params: Params) -> Response:
    enforce(cloud, req, "identity:list_users_in_group")
    group = get_or_404(cloud.identity, "group", params[0])
    users = [
        view("user", cloud.identity.users[u], req)
        for u in group["local_user_ids"]
        if u in cloud.identity.users
    ]
    return json_response(200, {"users": users, "links": {"self": req.base_url}})


def membership(cloud: CloudState, req: Request, params: Params) -> Response:
    """PUT / DELETE / HEAD ``/v3/groups/{g}/users/{u}``."""
    enforce(cloud, req, MEMBERSHIP_ACTIONS.get(req.method, "identity:check_user_in_group"))
    identity = cloud.identity
    group = get_or_404(identity, "group", params[0])
    get_or_404(identity, "user", params[1])
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
        enforce(cloud, req, GRANT_ACTIONS.get(req.method, "identity:check_grant"))
        identity = cloud.identity
        project, actor, role = params
        get_or_404(identity, "project", project)
        get_or_404(identity, actor_type, actor)
        get_or_404(identity, "role", role)
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
        enforce(cloud, req, "identity:list_grants")
        identity = cloud.identity
        get_or_404(identity, "project", params[0])
        get_or_404(identity, actor_type, params[1])
        roles = [
            view("role", identity.roles[a[3]], req)
            for a in sorted(identity.assignments)
            if a[:3] == (params[0], actor_type, params[1])
        ]
        return json_response(200, {"roles": roles, "links": {"self": req.base_url}})

    return handler


def role_assignments(cloud: CloudState, req: Request, params: Params) -> Response:
    """GET ``/v3/role_assignments`` with scope.project.id / user.id / group.id / role.id."""
    enforce(cloud, req, "identity:list_role_assignments")
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
    enforce(cloud, req, "identity:list_domains")
    domain = {
        **domain_view(DEFAULT_DOMAIN_ID),
        "enabled": True,
        "description": "The default domain",
    }
    return json_response(200, {"domains": [domain], "links": {"self": req.base_url}})
