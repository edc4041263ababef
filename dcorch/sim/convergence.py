"""Does a subcloud hold what dcorch should have replicated from the master?

As the audit compares (``same_resource``, docs/behaviour.md#audit-comparison-rules) and filters
(docs/behaviour.md#exclusions): users by id with password hashes, groups with members, projects,
roles, project role assignments by *names*, revocation events (all but the local autoincrement
id), ``ssl_ca``/``openstack_ca`` certificates by signature and dates, the sysadmin iuser hash and
expiry, fernet keys. Per-cloud things (tokens, iuser uuid, ``local_user`` ids) are ignored.

A pristine subcloud (identity never touched) equals the shared template, whose canonical form
is computed once per check, so checking 10,000 subclouds stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any, Final

from dcorch.sim.state import CloudState, Identity, Platform, SimState

EXCLUDED_USERS: Final = frozenset({"dcdbsync", "dcorch", "heat_admin", "smapi", "usm", "fm"})
EXCLUDED_ROLES: Final = frozenset({"heat_stack_owner", "heat_stack_user", "ResellerAdmin"})
SYNCED_CERT_TYPES: Final = frozenset({"ssl_ca", "openstack_ca"})
IDENTITY_CATEGORIES: Final = (
    "users",
    "groups",
    "projects",
    "roles",
    "assignments",
    "revoke_events",
)
PLATFORM_CATEGORIES: Final = ("certificates", "iuser", "fernet_repo")
CATEGORIES: Final = IDENTITY_CATEGORIES + PLATFORM_CATEGORIES

Canonical = dict[str, dict[str, dict[str, Any]]]


def user_is_excluded(name: str) -> bool:
    """dcorch never syncs these service users (``cinder<region>`` included)."""
    return name in EXCLUDED_USERS or name.startswith("cinder")


def _extra(text: str | None) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return text


def canonical_identity(identity: Identity) -> Canonical:
    """The synced part of a keystone, keyed the way the audit keys it."""
    users = {}
    for uid, rec in identity.users.items():
        if user_is_excluded(rec["local_user"]["name"]):
            continue
        u, lu = rec["user"], rec["local_user"]
        users[uid] = {
            "domain_id": u["domain_id"],
            "default_project_id": u["default_project_id"],
            "enabled": u["enabled"],
            "created_at": u["created_at"],
            "last_active_at": u["last_active_at"],
            "extra": _extra(u["extra"]),
            "name": lu["name"],
            "local_domain_id": lu["domain_id"],
            "user_id": lu["user_id"],
            "password_hashes": sorted(p["password_hash"] for p in rec["password"]),
        }
    groups = {
        gid: {
            **{k: g["group"][k] for k in ("domain_id", "name", "description")},
            "extra": _extra(g["group"]["extra"]),
            "members": sorted(g["local_user_ids"]),
        }
        for gid, g in identity.groups.items()
    }
    projects = {
        pid: {
            **{
                k: p["project"][k]
                for k in ("domain_id", "name", "description", "enabled", "parent_id", "is_domain")
            },
            "extra": _extra(p["project"]["extra"]),
        }
        for pid, p in identity.projects.items()
    }
    roles = {
        rid: {
            **{k: r["role"][k] for k in ("domain_id", "name", "description")},
            "extra": _extra(r["role"]["extra"]),
        }
        for rid, r in identity.roles.items()
        if r["role"]["name"] not in EXCLUDED_ROLES
    }
    assignments: dict[str, dict[str, Any]] = {}
    for project, actor_type, actor, role in identity.assignments:
        p, a, r = (
            identity.projects.get(project),
            identity.tables[actor_type].get(actor),
            identity.roles.get(role),
        )
        if p is None or a is None or r is None or r["role"]["name"] in EXCLUDED_ROLES:
            continue
        if actor_type == "user":
            actor_name, actor_domain = a["local_user"]["name"], a["user"]["domain_id"]
            if user_is_excluded(actor_name):
                continue
        else:
            actor_name, actor_domain = a["group"]["name"], a["group"]["domain_id"]
        key = (
            f"{p['project']['name']}@{p['project']['domain_id']}|{actor_type}:"
            f"{actor_name}@{actor_domain}|{r['role']['name']}"
        )
        assignments[key] = {}
    events = {
        key: {k: v for k, v in e.items() if k != "id"} for key, e in identity.revocations.items()
    }
    return {
        "users": users,
        "groups": groups,
        "projects": projects,
        "roles": roles,
        "assignments": assignments,
        "revoke_events": events,
    }


def canonical_platform(platform: Platform) -> Canonical:
    """The synced part of a sysinv."""
    certs = {
        c["signature"]: {"start_date": c["start_date"], "expiry_date": c["expiry_date"]}
        for c in platform.certificates.values()
        if c["certtype"] in SYNCED_CERT_TYPES
    }
    iuser = {
        "iuser": {
            "passwd_hash": platform.iuser["passwd_hash"],
            "passwd_expiry_days": platform.iuser["passwd_expiry_days"],
        }
    }
    keys = {"keys": {str(i): k for i, k in sorted(platform.fernet_keys.items())}}
    return {"certificates": certs, "iuser": iuser, "fernet_repo": keys}


def compare(master: Canonical, sub: Canonical, ignore: Collection[str] = ()) -> list[str]:
    """Human-readable differences (``users: missing <id> (name)``), empty when converged."""
    out: list[str] = []
    for category in CATEGORIES:
        if category in ignore or category not in master:
            continue
        want, have = master[category], sub[category]
        for key, value in want.items():
            label = f"{key} ({value['name']})" if "name" in value else key
            if key not in have:
                out.append(f"{category}: missing {label}")
            elif have[key] != value:
                fields = sorted(
                    f for f in set(value) | set(have[key]) if value.get(f) != have[key].get(f)
                )
                out.append(f"{category}: differs {label}: {', '.join(fields)}")
        if category != "revoke_events":
            # A subcloud's keystone revokes on its own too (a password synced as a PATCH makes a
            # per-user event there): events only the subcloud has are its own, never dcorch's.
            out += [f"{category}: extra {key}" for key in have if key not in want]
    return out


class ConvergenceCheck:
    """Compares many subclouds to the master, computing shared canonical forms once."""

    def __init__(self, sim: SimState, ignore: Collection[str] = ()) -> None:
        self.sim = sim
        self.ignore = frozenset(ignore)
        unknown = self.ignore - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown convergence category {sorted(unknown)[0]}")
        self._master = {
            **canonical_identity(sim.master.identity),
            **canonical_platform(sim.master.platform),
        }
        self._template: Canonical | None = None

    def differences(self, cloud: CloudState) -> list[str]:
        """What differs between this subcloud and the master."""
        if cloud.identity_is_pristine and not cloud.sim.distinct_default_ids:
            if self._template is None:
                self._template = canonical_identity(self.sim.template_identity)
            identity = self._template
        else:
            identity = canonical_identity(cloud.identity)
        return compare(
            self._master, {**identity, **canonical_platform(cloud.platform)}, self.ignore
        )

    def run(self, regions: Iterable[str] | None = None) -> dict[str, list[str]]:
        """``{region: differences}`` for the differing subclouds among ``regions`` (all if None).

        Raises:
            KeyError: a listed region is not a simulated subcloud.
        """
        names = list(self.sim.subclouds) if regions is None else list(regions)
        result = {}
        for region in names:
            cloud = self.sim.subclouds.get(region)
            if cloud is None:
                raise KeyError(f"unknown subcloud {region}")
            diff = self.differences(cloud)
            if diff:
                result[region] = diff
        return result
