"""Shared pieces of the simulated keystone API: record views, body checks, listings.

keystone's REST views (names, ``links``, ``extra`` fields merged in), 400s for bad bodies and
its messages for missing objects and duplicate names, shared so every handler's shapes match.
"""

from __future__ import annotations

import json
from typing import Any, Final

from dcorch.dbsync.contract import ROOT_DOMAIN, RecordError, check_row
from dcorch.sim.http import KeystoneError, Request, Response, json_response
from dcorch.sim.keystone_auth import enforce
from dcorch.sim.keystone_tables import KEYSTONE_SPECS
from dcorch.sim.records import (
    DEFAULT_DOMAIN_ID,
    NULL_DOMAIN,
    Record,
    make_revocation_event,
    user_event_id,
)
from dcorch.sim.state import CloudState, Identity

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


def body_of(req: Request, key: str) -> dict[str, Any]:
    body = req.json(KeystoneError)
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise KeystoneError(400, f"Invalid input for field '{key}': a JSON object is required.")
    return dict(body[key])


def get_or_404(identity: Identity, kind: str, oid: str) -> Record:
    rec = identity.tables[kind].get(oid)
    if rec is None:
        raise KeystoneError(404, f"Could not find {kind}: {oid}.")
    return rec


def name_field(body: dict[str, Any], required: bool) -> str | None:
    name = body.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip():
        raise KeystoneError(400, "Invalid input for field 'name': a non-empty string is required.")
    return name


def known_domains(identity: Identity) -> set[str]:
    """Ids of the domains (a domain is a project row), with the default and keystone's root."""
    found = {pid for pid, rec in identity.projects.items() if rec["project"]["is_domain"]}
    return found | {DEFAULT_DOMAIN_ID, ROOT_DOMAIN}


def storable(identity: Identity, kind: str, rec: Record) -> Record:
    """``rec`` if keystone would store it: its domain exists (else 404) and every value fits its
    column (else 400: wrong type, longer than the column).

    The columns are the copy of keystone's tables the dcdbsync contract checks records against,
    so what the simulated master keeps, a subcloud's dcdbsync takes (``./just fuzz`` found
    masters keeping names and descriptions no subcloud would, which then never converged).
    """
    domain = rec[kind].get("domain_id")
    if not (kind == "role" and domain == NULL_DOMAIN) and domain not in known_domains(identity):
        raise KeystoneError(404, f"Could not find domain: {domain}.")
    for section, rows in rec.items():
        spec = KEYSTONE_SPECS.get(section)
        if spec is None:
            continue  # not a table (a group's member list)
        for row in rows if isinstance(rows, list) else [rows]:
            try:
                check_row(spec, row, section, complete=False)
            except RecordError as exc:
                raise KeystoneError(400, f"Invalid input for field: {exc.message}.") from None
    return rec


def check_unique(identity: Identity, kind: str, domain_id: str, name: str, oid: str) -> None:
    other = identity.names.get((kind, domain_id, name))
    if other is not None and other != oid:
        raise KeystoneError(
            409,
            f"Conflict occurred attempting to store {kind} - Duplicate "
            f"entry found with name {name} at domain ID {domain_id}.",
        )


def listing(cloud: CloudState, req: Request, kind: str, filters: dict[str, str]) -> Response:
    enforce(cloud, req, f"identity:list_{PLURAL[kind]}")
    items = [view(kind, r, req) for r in cloud.identity.tables[kind].values()]
    for key, wanted in filters.items():
        items = [i for i in items if str(i.get(key)) == wanted]
    links = {"self": f"{req.base_url}/{PLURAL[kind]}", "next": None, "previous": None}
    return json_response(200, {PLURAL[kind]: items, "links": links})


def filters_of(req: Request, *keys: str) -> dict[str, str]:
    return {k: req.query[k] for k in keys if k in req.query}


def revoke_user_tokens(cloud: CloudState, user_id: str) -> None:
    # keystone does so on a password change or disable; dcorch syncs revoke_events_for_user
    identity = cloud.identity
    now = cloud.sim.wall_clock()
    event = make_revocation_event(identity.next_event_id, now, user_id=user_id)
    identity.next_event_id += 1
    identity.add_revocation(user_event_id(user_id, event["issued_before"]), event, now)
