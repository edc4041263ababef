"""What the audit compares: ids, names, exclusions and "same resource" rules.

Pure functions over dcdbsync / sysinv records (docs/behaviour.md#exclusions,
docs/behaviour.md#audit-comparison-rules), apart from the audit's flow to be unit-tested alone.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final

from dcorch.remote.clients import Record, singular

EXCLUDED_USERS: Final = frozenset({"dcdbsync", "dcorch", "heat_admin", "smapi", "usm", "fm"})
EXCLUDED_USER_PREFIXES: Final = ("cinder",)
EXCLUDED_ROLES: Final = frozenset({"heat_stack_owner", "heat_stack_user", "ResellerAdmin"})
KEYRING_USER: Final = ("default", "admin")
"""``(domain_id, name)`` of the user whose password also lives in the subcloud's keyring: a
password discrepancy is repaired by a keystone PATCH of the central password (which updates the
keyring) before the dcdbsync PUT (9e209f4e, docs/behaviour.md#audit)."""
SYNCED_CERT_TYPES: Final = frozenset({"ssl_ca", "openstack_ca"})

_FIELDS: Final = {
    # last_active_at is left out on purpose: dcorch's own logins touch it on every subcloud.
    "users": ("id", "domain_id", "default_project_id", "enabled", "created_at", "extra"),
    "groups": ("id", "domain_id", "description", "name", "extra"),
    "projects": (
        "id",
        "domain_id",
        "name",
        "extra",
        "description",
        "enabled",
        "parent_id",
        "is_domain",
    ),
    "roles": ("id", "domain_id", "name", "description", "extra"),
}


def object_id(kind: str, record: Record) -> str:
    """The keystone id of a dcdbsync record ("" when malformed)."""
    body = record.get(singular(kind))
    return str(body.get("id") or "") if isinstance(body, dict) else ""


def name_key(kind: str, record: Record) -> tuple[str, str]:
    """``(domain_id, name)``: how the same object is recognised under another id."""
    if kind == "users":
        local = record.get("local_user") or {}
        return (str(local.get("domain_id")), str(local.get("name")))
    body = record.get(singular(kind)) or {}
    return (str(body.get("domain_id")), str(body.get("name")))


def is_excluded(kind: str, record: Record) -> bool:
    """Service accounts and heat roles are never synced (docs/behaviour.md#exclusions, 4dea951a)."""
    _, name = name_key(kind, record)
    if kind == "users":
        return name in EXCLUDED_USERS or name.startswith(EXCLUDED_USER_PREFIXES)
    if kind == "roles":
        return name in EXCLUDED_ROLES
    return False


def same_record(kind: str, master: Record, sub: Record) -> bool:
    """Comparison rules for identity records (docs/behaviour.md#audit-comparison-rules)."""
    key = singular(kind)
    m, s = master.get(key) or {}, sub.get(key) or {}
    if any(m.get(f) != s.get(f) for f in _FIELDS[kind]):
        return False
    if kind == "users":
        ml, sl = master.get("local_user") or {}, sub.get("local_user") or {}
        if any(ml.get(f) != sl.get(f) for f in ("domain_id", "name", "user_id")):
            return False
        if not same_passwords(master, sub):
            return False
        if "user_option" in sub and _options(master) != _options(sub):
            return False  # absent on an N-1 subcloud: treated as equal (ce2833f9)
    if kind == "groups":
        return sorted(master.get("local_user_ids") or []) == sorted(sub.get("local_user_ids") or [])
    return True


def same_passwords(master: Record, sub: Record) -> bool:
    """As many password rows on each side and every master hash on the subcloud."""
    mh = [p.get("password_hash") for p in master.get("password") or []]
    sh = {p.get("password_hash") for p in sub.get("password") or []}
    return len(mh) == len(sub.get("password") or []) and set(mh) <= sh


def keyring_password(username: str, password: str) -> str | None:
    """The central password the keyring PATCH sets, or None (no PATCH).

    dcorch knows one central password, that of the account it logs in as (``[master]``); it is
    the keyring user's only when that account *is* the keyring user (docs/behaviour.md#audit).
    """
    return password if username == KEYRING_USER[1] and password else None


def _options(record: Record) -> list[Any]:
    return sorted(map(repr, record.get("user_option") or []))


def fernet_digest(keys: list[Record]) -> tuple[tuple[int, str], ...]:
    """Comparable form of a key repository (order-insensitive)."""
    return tuple(sorted((int(k["id"]), str(k["key"])) for k in keys))


def fernet_info(keys: list[Record]) -> dict[str, str]:
    """The ``{"<id>": "<key>"}`` resource_info the fernet work order carries."""
    return {str(k["id"]): str(k["key"]) for k in keys}


def same_iuser(master: Mapping[str, Any], sub: Mapping[str, Any]) -> bool:
    return all(master.get(f) == sub.get(f) for f in ("passwd_hash", "passwd_expiry_days"))


def synced_certificate(cert: Mapping[str, Any]) -> bool:
    return str(cert.get("certtype", "")) in SYNCED_CERT_TYPES and bool(cert.get("signature"))


def assignment_id(entry: Mapping[str, Any]) -> str:
    """``"{project}_{actor}_{role}"`` of a keystone role assignment; "" unless project-scoped."""
    project = ((entry.get("scope") or {}).get("project") or {}).get("id")
    actor = (entry.get("user") or entry.get("group") or {}).get("id")
    role = (entry.get("role") or {}).get("id")
    return f"{project}_{actor}_{role}" if project and actor and role else ""


def user_event_key(event: Mapping[str, Any]) -> str:
    """dcdbsync's id of a per-user revocation event ("" for an audit-id event).

    Url-safe base64 of ``"<user_id>_<issued_before>"`` (docs/behaviour.md#audit-comparison-rules).
    """
    if event.get("audit_id") or not event.get("user_id") or not event.get("issued_before"):
        return ""
    raw = f"{event['user_id']}_{event['issued_before']}".encode()
    return base64.urlsafe_b64encode(raw).decode()
