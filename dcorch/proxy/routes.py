"""The intercepted routes, as data (docs/behaviour.md#intercepted-routes).

Each :class:`RouteSpec` says which paths of one resource type are intercepted and, per method,
what work order a request becomes: the stored operation, where ``source_resource_id`` comes from
(:class:`Rid`) and what ``resource_info`` holds (:class:`Info`). :mod:`dcorch.proxy.interception`
applies specs; a table free of code can be reviewed against the spec line by line.

Paths are matched against the raw (percent-encoded) request path, as the real proxy matched the
request URL. Id segments are ``[^/]+``, so a trailing slash or an empty id does not match and
the request passes through with no work (the real proxy computed an empty id, enqueued nothing).

Upstream set methods per *resource type*, so meaningless combinations matched too
(``POST /v3/users/{id}``); the master rejects those (no work), so only meaningful ones are listed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dcorch import constants as c


class Rid(enum.Enum):
    """Where a work order's ``source_resource_id`` comes from."""

    PATH_ID = "path_id"
    """The ``id`` path parameter: the URL tail, or the user id before ``/password``."""
    RESPONSE_ID = "response_id"
    """``id`` of the first top-level object of the master's JSON response (creates)."""
    ASSIGNMENT = "assignment"
    """``"{project}_{actor}_{role}"`` from the path (actor is a user or a group)."""
    AUDIT_ID = "audit_id"
    """Audit id of the token named in ``X-Subject-Token`` (token revocation)."""
    SIGNATURE = "signature"
    """Certificate signature(s) from the master's response; one work order per signature."""


class Info(enum.Enum):
    """What a work order's ``resource_info`` (a JSON string) holds."""

    REQUEST_BODY = "request_body"
    """The request body, as is (it must be JSON)."""
    REQUEST_BODY_OR_EMPTY = "request_body_or_empty"
    """The request body if there is one, else ``{}``."""
    EMPTY = "empty"
    """``{}``."""
    GROUP_REF = "group_ref"
    """``{"group": {"id": <group id>}}`` (group membership changes)."""
    TOKEN_REVOKE_EVENT = "token_revoke_event"
    """``{"token_revoke_event": {"audit_id": <audit id>}}``."""
    MULTIPART_PAYLOAD = "multipart_payload"
    """``{"payload": <raw body as text>, "content_type": <request Content-Type>}``."""
    JSON_PAYLOAD = "json_payload"
    """``{"payload": <request JSON>}``."""


@dataclass(frozen=True, slots=True)
class Action:
    """What one HTTP method on one route turns into."""

    operation: str
    rid: Rid
    info: Info


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One intercepted path pattern of one resource type and the methods intercepted on it."""

    pattern: re.Pattern[str]
    """Matched with ``fullmatch`` against the raw request path (no query)."""
    resource_type: str
    actions: Mapping[str, Action]
    """HTTP method (upper case) to action; other methods are passed through untouched."""


def _route(pattern: str, resource_type: str, actions: Mapping[str, Action]) -> RouteSpec:
    return RouteSpec(re.compile(pattern), resource_type, dict(actions))


_ID = r"(?P<id>[^/]+)"
_CREATE = Action(c.OPERATION_POST, Rid.RESPONSE_ID, Info.REQUEST_BODY)
_PATCH = Action(c.OPERATION_PATCH, Rid.PATH_ID, Info.REQUEST_BODY)
_DELETE = Action(c.OPERATION_DELETE, Rid.PATH_ID, Info.EMPTY)


def _crud(collection: str, resource_type: str) -> tuple[RouteSpec, RouteSpec]:
    """The create / update / delete routes shared by keystone users, groups, roles, projects."""
    return (
        _route(rf"/v3/{collection}", resource_type, {"POST": _CREATE}),
        _route(rf"/v3/{collection}/{_ID}", resource_type, {"PATCH": _PATCH, "DELETE": _DELETE}),
    )


IDENTITY_ROUTES: Final[tuple[RouteSpec, ...]] = (
    *_crud("users", c.RESOURCE_USERS),
    # Upstream's resource type users_password, rewritten to a users patch.
    _route(
        rf"/v3/users/{_ID}/password",
        c.RESOURCE_USERS,
        {"POST": Action(c.OPERATION_PATCH, Rid.PATH_ID, Info.REQUEST_BODY)},
    ),
    *_crud("groups", c.RESOURCE_GROUPS),
    # Adding and removing a member are both a "put" of the group.
    _route(
        rf"/v3/groups/{_ID}/users/(?P<user>[^/]+)",
        c.RESOURCE_GROUPS,
        {
            "PUT": Action(c.OPERATION_PUT, Rid.PATH_ID, Info.GROUP_REF),
            "DELETE": Action(c.OPERATION_PUT, Rid.PATH_ID, Info.GROUP_REF),
        },
    ),
    *_crud("roles", c.RESOURCE_ROLES),
    *_crud("projects", c.RESOURCE_PROJECTS),
    _route(
        r"/v3/projects/(?P<project>[^/]+)/(?:users|groups)/(?P<actor>[^/]+)/roles/(?P<role>[^/]+)",
        c.RESOURCE_PROJECT_ROLE_ASSIGNMENTS,
        {
            "PUT": Action(c.OPERATION_POST, Rid.ASSIGNMENT, Info.REQUEST_BODY_OR_EMPTY),
            "DELETE": Action(c.OPERATION_DELETE, Rid.ASSIGNMENT, Info.EMPTY),
        },
    ),
    _route(
        r"/v3/auth/tokens",
        c.RESOURCE_REVOKE_EVENTS,
        {"DELETE": Action(c.OPERATION_POST, Rid.AUDIT_ID, Info.TOKEN_REVOKE_EVENT)},
    ),
)

PLATFORM_ROUTES: Final[tuple[RouteSpec, ...]] = (
    # POST covers certificate_install and any other POST /v1/certificate/{x}; DELETE takes a uuid.
    _route(
        rf"/v1/certificate/{_ID}",
        c.RESOURCE_CERTIFICATES,
        {
            "POST": Action(c.OPERATION_POST, Rid.SIGNATURE, Info.MULTIPART_PAYLOAD),
            "DELETE": Action(c.OPERATION_DELETE, Rid.SIGNATURE, Info.EMPTY),
        },
    ),
    _route(
        rf"/v1/iuser/{_ID}",
        c.RESOURCE_IUSER,
        {
            "PATCH": Action(c.OPERATION_PATCH, Rid.PATH_ID, Info.JSON_PAYLOAD),
            "PUT": Action(c.OPERATION_PUT, Rid.PATH_ID, Info.JSON_PAYLOAD),
        },
    ),
)

ROUTES: Final[Mapping[str, tuple[RouteSpec, ...]]] = {
    c.ENDPOINT_TYPE_IDENTITY: IDENTITY_ROUTES,
    c.ENDPOINT_TYPE_PLATFORM: PLATFORM_ROUTES,
    c.ENDPOINT_TYPE_USM: (),
}
"""Intercepted routes per proxy type; ``usm`` is a pure pass-through."""

OK_STATUSES: Final[Mapping[str, frozenset[int]]] = {
    c.ENDPOINT_TYPE_IDENTITY: frozenset({200, 201, 202, 204}),
    c.ENDPOINT_TYPE_PLATFORM: frozenset({200, 202, 204}),
    c.ENDPOINT_TYPE_USM: frozenset({200, 202, 204}),
}
"""Master statuses that mean "the change happened" per proxy type (sysinv has no 201)."""

VERSION_ROOTS: Final = frozenset({"/", "/v1", "/v1/", "/v3", "/v3/"})
"""Paths whose ``GET`` is forwarded without authentication (version discovery)."""
