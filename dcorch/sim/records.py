"""Identity "DB records" in dcdbsync's shape, and the defaults every simulated keystone starts with.

Identity objects are stored as dcdbsync reads them from keystone's tables (``{"user": {...},
"local_user": {...}, "password": [...]}``), since dcorch replicates those records verbatim,
master ids and password hashes included; keystone's REST views are derived on the way out.

Records are immutable: an update stores a new dict in place of the old one, so 10,000
subclouds share one template's default records (copy on write) instead of 10,000 copies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from dcorch.dbsync.contract import user_event_id as user_event_id
from dcorch.sim.tokens import hash_password

Record = dict[str, Any]

DEFAULT_DOMAIN_ID: Final = "default"
DEFAULT_DOMAIN_NAME: Final = "Default"
NULL_DOMAIN: Final = "<<null>>"
"""keystone's stored domain_id of a global role (the API shows null)."""

ADMIN_USER: Final = "admin"
ADMIN_PROJECT: Final = "admin"
SERVICES_PROJECT: Final = "services"
DEFAULT_ROLES: Final = ("admin", "member", "reader")
# on every real cloud; never synced (docs/behaviour.md#exclusions)
DEFAULT_SERVICE_USERS: Final = ("dcorch", "dcdbsync", "fm")
DEFAULT_SERVICE_PASSWORD: Final = "service-password"
DEFAULT_SYSADMIN_HASH: Final = "$6$sim$sysadmin-default-hash"


def iso(ts: float) -> str:
    """keystone's DB datetime text (UTC, microseconds, no zone)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def iso_z(ts: float) -> str:
    """keystone's API datetime text (``...Z``)."""
    return iso(ts) + "Z"


def new_id() -> str:
    """A keystone-style id (uuid4 hex)."""
    return uuid.uuid4().hex


def password_row(password_hash: str, now: float) -> Record:
    """One row of keystone's ``password`` table (local_user_id is filled in on insert)."""
    return {
        "id": None,
        "local_user_id": None,
        "password_hash": password_hash,
        "created_at": iso(now),
        "expires_at": None,
        "self_service": False,
        "created_at_int": int(now * 1_000_000),
        "expires_at_int": None,
    }


def make_user(
    name: str,
    password_hash: str | None,
    now: float,
    *,
    user_id: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
    enabled: bool = True,
    default_project_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Record:
    """A user record: ``user`` + ``local_user`` + ``password`` rows + ``user_option`` rows."""
    uid = user_id or new_id()
    return {
        "user": {
            "id": uid,
            "extra": json.dumps(extra or {}),
            "enabled": enabled,
            "default_project_id": default_project_id,
            "created_at": iso(now),
            "last_active_at": None,
            "domain_id": domain_id,
        },
        "local_user": {
            "id": None,
            "user_id": uid,
            "domain_id": domain_id,
            "name": name,
            "failed_auth_count": None,
            "failed_auth_at": None,
        },
        "password": [password_row(password_hash, now)] if password_hash else [],
        "user_option": [],
    }


def make_group(
    name: str,
    *,
    group_id: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
    description: str = "",
    members: list[str] | None = None,
) -> Record:
    """A group record: ``group`` + sorted member user ids (dcdbsync's ``local_user_ids``)."""
    return {
        "group": {
            "id": group_id or new_id(),
            "domain_id": domain_id,
            "name": name,
            "description": description,
            "extra": json.dumps({}),
        },
        "local_user_ids": sorted(members or []),
    }


def make_project(
    name: str,
    *,
    project_id: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
    description: str = "",
    enabled: bool = True,
    parent_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Record:
    """A project record (top-level projects have the domain as parent, as in keystone)."""
    return {
        "project": {
            "id": project_id or new_id(),
            "name": name,
            "extra": json.dumps(extra or {}),
            "description": description,
            "enabled": enabled,
            "domain_id": domain_id,
            "parent_id": parent_id or domain_id,
            "is_domain": False,
        }
    }


def make_role(
    name: str,
    *,
    role_id: str | None = None,
    domain_id: str | None = None,
    description: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Record:
    """A role record (global roles store ``<<null>>`` as domain, like keystone)."""
    return {
        "role": {
            "id": role_id or new_id(),
            "name": name,
            "extra": json.dumps(extra or {}),
            "domain_id": domain_id or NULL_DOMAIN,
            "description": description,
        }
    }


def make_revocation_event(
    event_id: int,
    now: float,
    *,
    audit_id: str | None = None,
    user_id: str | None = None,
    issued_before: float | None = None,
) -> Record:
    """A row of keystone's ``revocation_event`` table."""
    return {
        "id": event_id,
        "domain_id": None,
        "project_id": None,
        "user_id": user_id,
        "role_id": None,
        "trust_id": None,
        "consumer_id": None,
        "access_token_id": None,
        "issued_before": iso(issued_before if issued_before is not None else now),
        "expires_at": None,
        "revoked_at": iso(now),
        "audit_id": audit_id,
        "audit_chain_id": None,
    }


def default_identity_records(
    admin_password: str, now: float, make_id: Callable[[], str] = new_id
) -> tuple[list[Record], list[Record], list[Record], set[tuple[str, str, str, str]]]:
    """Users, projects, roles and project-role assignments of a freshly installed cloud.

    Returns:
        ``(users, projects, roles, assignments)``; an assignment is
        ``(project_id, actor_type, actor_id, role_id)``.
    """
    projects = [
        make_project(ADMIN_PROJECT, project_id=make_id(), description="admin project"),
        make_project(SERVICES_PROJECT, project_id=make_id(), description="services project"),
    ]
    roles = [make_role(name, role_id=make_id()) for name in DEFAULT_ROLES]
    admin_project_id = projects[0]["project"]["id"]
    users = [
        make_user(
            ADMIN_USER,
            hash_password(admin_password),
            now,
            user_id=make_id(),
            default_project_id=admin_project_id,
        )
    ]
    service_hash = hash_password(DEFAULT_SERVICE_PASSWORD)
    users += [make_user(n, service_hash, now, user_id=make_id()) for n in DEFAULT_SERVICE_USERS]
    admin_role_id = roles[0]["role"]["id"]
    assignments = {(admin_project_id, "user", users[0]["user"]["id"], admin_role_id)}
    services_id = projects[1]["project"]["id"]
    assignments |= {(services_id, "user", u["user"]["id"], admin_role_id) for u in users[1:]}
    return users, projects, roles, assignments
