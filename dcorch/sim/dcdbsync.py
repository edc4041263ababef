"""dcdbsync v1.0: keystone's identity records, read and written with their original ids.

dcorch replicates identity objects *with the master's ids and password hashes*, which the
keystone API cannot do, so StarlingX runs dcdbsync (an API over keystone's tables) beside it.
dcorch reads master records here, and on a subcloud POSTs one to create the object or PUTs one
over ``/<subcloud id>`` to make it (id included) the master's. Errors: pecan's ``error_message``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Final

from dcorch.sim.endpoints import DCDBSYNC
from dcorch.sim.http import Request, Response, SysinvError, empty_response, json_response
from dcorch.sim.keystone_auth import require_token
from dcorch.sim.records import Record, user_event_id
from dcorch.sim.routes import Handler, RouteTable
from dcorch.sim.state import CloudState, name_of

Params = tuple[str, ...]
DbsyncError = SysinvError
SECTIONS: Final = {
    "user": ("user", "local_user", "password"),
    "group": ("group", "local_user_ids"),
    "project": ("project",),
    "role": ("role",),
}
PLURAL: Final = {"users": "user", "groups": "group", "projects": "project", "roles": "role"}


def _payload(req: Request, kind: str) -> dict[str, Any]:
    body = req.json(DbsyncError)
    if not isinstance(body, dict) or not body:
        raise DbsyncError(400, "Body required")
    if not isinstance(body.get(kind), dict):
        raise DbsyncError(400, f"{kind} record required")
    if kind == "user" and not isinstance(body.get("local_user"), dict):
        raise DbsyncError(400, "local_user record required")
    return body


def _check(kind: str, rec: Record) -> None:
    inner = rec[kind]
    if not isinstance(inner.get("id"), str) or not inner["id"]:
        raise DbsyncError(400, f"{kind} id required")
    name = rec["local_user"].get("name") if kind == "user" else inner.get("name")
    if not isinstance(name, str) or not name:
        raise DbsyncError(400, f"{kind.capitalize()} name required")
    if kind == "group" and not isinstance(rec.get("local_user_ids"), list):
        raise DbsyncError(400, "local_user_ids required")


def list_records(kind: str) -> Handler:
    """``GET /identity/<kind>s/``: every record of the kind."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, DbsyncError)
        return json_response(200, list(cloud.identity.tables[kind].values()))

    return handler


def get_record(kind: str) -> Handler:
    """``GET /identity/<kind>s/<id>``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, DbsyncError)
        rec = cloud.identity.tables[kind].get(params[0])
        if rec is None:
            raise DbsyncError(404, f"{kind.capitalize()} not found: {params[0]}")
        return json_response(200, rec)

    return handler


def create_record(kind: str) -> Handler:
    """``POST /identity/<kind>s/``: insert the master's record as-is; 201 with the stored one."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, DbsyncError)
        body = _payload(req, kind)
        rec = {section: body.get(section, []) for section in SECTIONS[kind]}
        _check(kind, rec)
        identity = cloud.identity
        oid = rec[kind]["id"]
        clash = identity.names.get(name_of(kind, rec))
        if oid in identity.tables[kind] or clash is not None:
            raise DbsyncError(409, f"Unable to create {kind}: {oid} already exists")
        if kind == "user":
            rec["local_user"] = {**rec["local_user"], "user_id": oid}
        stored = identity.put(kind, rec)
        cloud.record(DCDBSYNC, f"create_{kind}", id=oid)
        return json_response(201, stored)

    return handler


def replace_record(kind: str) -> Handler:
    """``PUT /identity/<kind>s/<id>``: the object <id> becomes the given record (new id too)."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, DbsyncError)
        identity = cloud.identity
        old = identity.tables[kind].get(params[0])
        if old is None:
            raise DbsyncError(404, f"{kind.capitalize()} not found: {params[0]}")
        body = _payload(req, kind)
        rec: Record = {}
        for section in SECTIONS[kind]:
            value = body.get(section, old[section])
            rec[section] = {**old[section], **value} if isinstance(value, dict) else value
        _check(kind, rec)
        new_id = rec[kind]["id"]
        if kind == "user":
            rec["local_user"] = {**rec["local_user"], "user_id": new_id}
        clash = identity.names.get(name_of(kind, rec))
        taken = new_id != params[0] and new_id in identity.tables[kind]
        if taken or clash not in (None, params[0]):
            raise DbsyncError(409, f"Unable to update {kind}: {new_id} conflicts")
        stored = identity.put(kind, rec, replace_id=params[0])
        cloud.record(DCDBSYNC, f"replace_{kind}", id=params[0], new_id=new_id)
        return json_response(200, stored)

    return handler


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def event_key(event: Record) -> str:
    """The event's id in dcdbsync's URLs: its audit id, else the per-user event id."""
    if event.get("audit_id"):
        return str(event["audit_id"])
    return user_event_id(str(event["user_id"]), str(event["issued_before"]))


def list_events(cloud: CloudState, req: Request, params: Params) -> Response:
    require_token(cloud, req, DbsyncError)
    events = [{"revocation_event": e} for e in cloud.identity.revocations.values()]
    return json_response(200, events)


def create_event(cloud: CloudState, req: Request, params: Params) -> Response:
    """``POST /identity/token-revocation-events/``: store the master's event."""
    require_token(cloud, req, DbsyncError)
    body = req.json(DbsyncError)
    event = body.get("revocation_event") if isinstance(body, dict) else None
    if not isinstance(event, dict) or not (event.get("audit_id") or event.get("user_id")):
        raise DbsyncError(400, "revocation_event with audit_id or user_id required")
    try:
        user_epoch = _epoch(str(event["issued_before"])) if event.get("user_id") else None
    except (KeyError, ValueError):
        raise DbsyncError(400, "revocation_event.issued_before must be a datetime") from None
    identity = cloud.identity
    stored = {**event, "id": identity.next_event_id}
    identity.next_event_id += 1
    key = event_key(stored)
    identity.add_revocation(key, stored, user_epoch)
    cloud.record(DCDBSYNC, "create_revoke_event", key=key)
    return json_response(201, {"revocation_event": stored})


def _find_event(cloud: CloudState, by: str, ref: str) -> str:
    identity = cloud.identity
    if ref in identity.revocations and (by == "audits") == bool(
        identity.revocations[ref].get("audit_id")
    ):
        return ref
    if by == "users":
        try:
            user_id, issued = base64.urlsafe_b64decode(ref.encode()).decode().split("_", 1)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise DbsyncError(404, "Invalid event ID format") from None
        for key, event in identity.revocations.items():
            same_user = event.get("user_id") == user_id and not event.get("audit_id")
            if same_user and _epoch(str(event["issued_before"])) == _epoch(issued):
                return key
    raise DbsyncError(404, f"Token revocation event with id {ref} doesn't exist.")


def event_detail(by: str) -> Handler:
    """GET / DELETE ``/identity/token-revocation-events/<audits|users>/<id>``."""

    def handler(cloud: CloudState, req: Request, params: Params) -> Response:
        require_token(cloud, req, DbsyncError)
        key = _find_event(cloud, by, params[0])
        if req.method == "DELETE":
            cloud.identity.remove_revocation(key)
            cloud.record(DCDBSYNC, "delete_revoke_event", key=key)
            return empty_response(204)
        return json_response(200, {"revocation_event": cloud.identity.revocations[key]})

    return handler


ROUTES = RouteTable(DCDBSYNC, DbsyncError)
for _plural, _kind in PLURAL.items():
    ROUTES.add(f"identity/{_plural}", GET=list_records(_kind), POST=create_record(_kind))
    ROUTES.add(f"identity/{_plural}/{{}}", GET=get_record(_kind), PUT=replace_record(_kind))
ROUTES.add("identity/token-revocation-events", GET=list_events, POST=create_event)
for _by in ("audits", "users"):
    _detail = event_detail(_by)
    ROUTES.add(f"identity/token-revocation-events/{_by}/{{}}", GET=_detail, DELETE=_detail)
