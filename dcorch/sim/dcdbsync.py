"""dcdbsync v1.0: keystone's identity records, read and written with their original ids.

dcorch replicates identity objects *with the master's ids and password hashes*, which the
keystone API cannot do, so StarlingX runs dcdbsync (an API over keystone's tables) beside it.
dcorch reads master records here, and on a subcloud POSTs one to create the object or PUTs one
over ``/<subcloud id>`` to make it (id included) the master's.

It answers like the DB-sync agent over a real keystone database (``dcorch/dbsync``), which a
contract test runs against both: bodies are checked by the same :mod:`dcorch.dbsync.contract`
against a copy of keystone's tables (:mod:`.keystone_tables`); stored rows carry every column;
an admin token of this cloud is required (401/403 in keystone's shape, as keystonemiddleware);
the service's own errors are pecan's ``error_message``.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, Final

from dcorch.dbsync.contract import (
    GROUP_MEMBERS,
    IGNORED_COLUMNS,
    KIND_TABLES,
    NULL_DOMAIN,
    Record,
    RecordError,
    complete_record,
    merge_record,
    parse_datetime,
    parse_event,
    parse_record,
    parse_user_event_id,
    user_event_id,
)
from dcorch.sim.endpoints import DCDBSYNC
from dcorch.sim.http import (
    KeystoneError,
    Request,
    Response,
    SysinvError,
    empty_response,
    json_response,
)
from dcorch.sim.keystone_auth import UNAUTHORIZED, check_token
from dcorch.sim.keystone_tables import KEYSTONE_SPECS
from dcorch.sim.keystone_views import known_domains
from dcorch.sim.routes import Handler, RouteTable
from dcorch.sim.state import CloudState, Identity, name_of

Params = tuple[str, ...]
DbsyncError = SysinvError
FORBIDDEN: Final = "You are not authorized to perform the requested action: admin role required."
SECTIONS: Final = {
    "user": ("user", "local_user", "password", "user_option"),
    "group": ("group", GROUP_MEMBERS),
    "project": ("project",),
    "role": ("role",),
}
PLURAL: Final = dict(KIND_TABLES)
COLUMN_DEFAULTS: Final = {
    ("password", "self_service"): False,
    ("password", "created_at_int"): 0,
    ("project", "is_domain"): False,
    ("role", "domain_id"): NULL_DOMAIN,
}
"""keystone's server defaults of the columns a record may leave out (the others are NULL)."""


def _full_row(table: str, row: Record) -> Record:
    """A stored row has every column of keystone's table, as the agent reads them back."""
    return {
        column: row.get(column, COLUMN_DEFAULTS.get((table, column)))
        for column in KEYSTONE_SPECS[table].columns
    }


def _require_admin(cloud: CloudState, req: Request) -> None:
    """A valid token of this cloud with the admin role (keystone's 401/403 otherwise)."""
    payload = check_token(cloud, req.header("x-auth-token"))
    if payload is None:
        raise KeystoneError(401, UNAUTHORIZED)
    identity = cloud.identity
    roles = identity.roles_of(payload.user_id, payload.project_id) if payload.project_id else []
    if "admin" not in {identity.roles[r]["role"]["name"] for r in roles if r in identity.roles}:
        raise KeystoneError(403, FORBIDDEN)


def _contract(handler: Handler) -> Handler:
    """Authenticate, then run the handler with contract refusals in dcdbsync's error shape."""

    def wrapped(cloud: CloudState, req: Request, params: Params) -> Response:
        _require_admin(cloud, req)
        try:
            return handler(cloud, req, params)
        except RecordError as exc:
            raise DbsyncError(exc.status, exc.message) from None

    return wrapped


def _body(req: Request) -> Any:
    return req.json(DbsyncError)


def _check_references(identity: Identity, kind: str, rec: Record) -> None:
    """As the agent: the domain, a project's parent and a group's members must exist."""
    body = rec[kind]
    domain = body.get("domain_id")
    if not (kind == "role" and domain == NULL_DOMAIN) and domain not in known_domains(identity):
        raise RecordError(400, f"{kind}.domain_id {domain} is not a domain")
    parent = body.get("parent_id")
    known = identity.projects.keys() | known_domains(identity)
    if kind == "project" and parent is not None and parent != body["id"] and parent not in known:
        raise RecordError(400, f"project.parent_id {parent} does not exist")
    if kind == "group":
        missing = sorted(set(rec[GROUP_MEMBERS]) - set(identity.users))
        if missing:
            raise RecordError(400, f"{GROUP_MEMBERS} names unknown users: {', '.join(missing)}")


def _stored(kind: str, rec: Record, oid: str) -> Record:
    """The record in stored form: full rows, links to the owner set (ids are the state's)."""
    out: Record = {kind: _full_row(kind, rec[kind])}
    if kind == "user":
        out["local_user"] = _full_row("local_user", {**rec["local_user"], "user_id": oid})
        out["password"] = [
            _full_row("password", _without_ignored("password", p)) for p in rec["password"]
        ]
        out["user_option"] = [
            _full_row("user_option", {**o, "user_id": oid}) for o in rec.get("user_option", [])
        ]
    if kind == "group":
        out[GROUP_MEMBERS] = sorted(rec[GROUP_MEMBERS])
    return out


def _without_ignored(table: str, row: Record) -> Record:
    return {k: v for k, v in row.items() if k not in IGNORED_COLUMNS[table]}


def list_records(kind: str) -> Handler:
    """``GET /identity/<kind>s/``: every record of the kind, in id order."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        table = cloud.identity.tables[kind]
        return json_response(200, [table[k] for k in sorted(table)])

    return _contract(handler)


def get_record(kind: str) -> Handler:
    """``GET /identity/<kind>s/<id>``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        rec = cloud.identity.tables[kind].get(params[0])
        if rec is None:
            raise RecordError(404, f"{kind.capitalize()} not found: {params[0]}")
        return json_response(200, rec)

    return _contract(handler)


def create_record(kind: str) -> Handler:
    """``POST /identity/<kind>s/``: insert the master's record as-is; 201 with the stored one."""
    plural = _plural(kind)

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        given = parse_record(plural, _body(req), KEYSTONE_SPECS)
        defaults: Record = {"password": [], "user_option": []} if kind == "user" else {}
        rec = complete_record(plural, {**defaults, **given}, KEYSTONE_SPECS)
        identity = cloud.identity
        _check_references(identity, kind, rec)
        oid = rec[kind]["id"]
        if oid in identity.tables[kind]:
            raise RecordError(409, f"Unable to create {kind}: {oid} already exists")
        stored = _stored(kind, rec, oid)
        if identity.names.get(name_of(kind, stored)) is not None:
            raise RecordError(409, f"Unable to create {kind}: its name is taken in its domain")
        stored = identity.put(kind, stored)
        cloud.record(DCDBSYNC, f"create_{kind}", id=oid)
        return json_response(201, stored)

    return _contract(handler)


def replace_record(kind: str) -> Handler:
    """``PUT /identity/<kind>s/<id>``: the object <id> becomes the given record (new id too)."""
    plural = _plural(kind)

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        given = parse_record(plural, _body(req), KEYSTONE_SPECS)
        identity = cloud.identity
        old = identity.tables[kind].get(params[0])
        if old is None:
            raise RecordError(404, f"{kind.capitalize()} not found: {params[0]}")
        rec = complete_record(plural, merge_record(plural, old, given), KEYSTONE_SPECS)
        _check_references(identity, kind, rec)
        new_id = rec[kind]["id"]
        if new_id != params[0] and new_id in identity.tables[kind]:
            raise RecordError(409, f"Unable to update {kind}: {new_id} already exists")
        stored = _stored(kind, rec, new_id)
        if identity.names.get(name_of(kind, stored)) not in (None, params[0]):
            raise RecordError(409, f"Unable to update {kind}: its name is taken in its domain")
        stored = identity.put(kind, stored, replace_id=params[0])
        cloud.record(DCDBSYNC, f"replace_{kind}", id=params[0], new_id=new_id)
        return json_response(200, stored)

    return _contract(handler)


def _plural(kind: str) -> str:
    return next(p for p, k in KIND_TABLES.items() if k == kind)


def event_key(event: Record) -> str:
    """The event's id in dcdbsync's URLs: its audit id, else the per-user event id."""
    if event.get("audit_id"):
        return str(event["audit_id"])
    return user_event_id(str(event["user_id"]), str(event["issued_before"]))


def _list_events(cloud: CloudState, req: Request, params: Params) -> Response:
    events = sorted(cloud.identity.revocations.values(), key=lambda e: int(e["id"]))
    return json_response(200, [{"revocation_event": e} for e in events])


def _create_event(cloud: CloudState, req: Request, params: Params) -> Response:
    """``POST /identity/token-revocation-events/``: store the master's event (409 if there)."""
    event = parse_event(_body(req), KEYSTONE_SPECS["revocation_event"])
    identity = cloud.identity
    stored = _full_row("revocation_event", {**event, "id": identity.next_event_id})
    key = event_key(stored)
    if key in identity.revocations:
        raise RecordError(409, "Unable to create revocation event: it already exists")
    identity.next_event_id += 1
    user_epoch = None if stored["audit_id"] else _epoch(stored["issued_before"])
    identity.add_revocation(key, stored, user_epoch)
    cloud.record(DCDBSYNC, "create_revoke_event", key=key)
    return json_response(201, {"revocation_event": stored})


def _epoch(text: str) -> float:
    return parse_datetime(text).replace(tzinfo=UTC).timestamp()


def _find_event(cloud: CloudState, by: str, ref: str) -> str:
    identity = cloud.identity
    if by == "audits":
        event = identity.revocations.get(ref)
        if event is not None and event.get("audit_id") == ref:
            return ref
    else:
        user_id, issued = parse_user_event_id(ref)
        for key, event in identity.revocations.items():
            if event.get("audit_id") or event.get("user_id") != user_id:
                continue
            if parse_datetime(str(event["issued_before"])) == issued:
                return key
    raise RecordError(404, f"Token revocation event with id {ref} doesn't exist.")


def event_detail(by: str) -> Handler:
    """GET / DELETE ``/identity/token-revocation-events/<audits|users>/<id>``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        key = _find_event(cloud, by, params[0])
        if req.method == "DELETE":
            cloud.identity.remove_revocation(key)
            cloud.record(DCDBSYNC, "delete_revoke_event", key=key)
            return empty_response(204)
        return json_response(200, {"revocation_event": cloud.identity.revocations[key]})

    return _contract(handler)


def _routes() -> RouteTable:
    routes = RouteTable(DCDBSYNC, DbsyncError)
    for plural, kind in PLURAL.items():
        routes.add(f"identity/{plural}", GET=list_records(kind), POST=create_record(kind))
        routes.add(f"identity/{plural}/{{}}", GET=get_record(kind), PUT=replace_record(kind))
    routes.add(
        "identity/token-revocation-events",
        GET=_contract(_list_events),
        POST=_contract(_create_event),
    )
    for by in ("audits", "users"):
        detail = event_detail(by)
        routes.add(f"identity/token-revocation-events/{by}/{{}}", GET=detail, DELETE=detail)
    return routes


ROUTES: Final = _routes()
