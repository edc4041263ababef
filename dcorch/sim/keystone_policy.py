"""Keystone 30's default policy, for the routes the simulated keystone serves.

The proxies leave authorization to the master (docs/behaviour.md#proxy-pipeline), so a proxy
test against the simulator proves something only if the simulator refuses what keystone
refuses. The rules below are keystone's defaults (``enforce_new_defaults`` and ``enforce_scope``
on, as in keystone 30) evaluated for the tokens this simulator issues: project-scoped or
unscoped, never system- or domain-scoped, no implied roles, no ``service`` users of its own.
Under those tokens the defaults come down to:

======================================================  =========================================
action                                                  allowed for
======================================================  =========================================
every create/update/delete of users, groups, projects,  ``admin`` (the domain-manager and
roles, memberships and grants; every listing            domain/system-reader clauses need a
(``list_users``, ``list_groups``, ``list_projects``,    domain- or system-scoped token)
``list_roles``, ``list_domains``,
``list_role_assignments``, ``list_grants``,
``list_users_in_group``), ``get_group``,
``check_grant``, ``check_user_in_group``
``get_user``, ``list_groups_for_user``                  ``admin``, or the user themself
``get_project``                                         ``admin``, or a token of that project
``get_role``                                            ``admin``, or ``manager`` reading the
                                                        manager, member or reader role
``validate_token`` (GET)                                ``admin``, ``service``, or the user the
                                                        subject token belongs to
``check_token`` (HEAD), ``revoke_token`` (DELETE)       ``admin``, or the subject token's user
``list_revoke_events``                                  ``admin`` or ``service``
======================================================  =========================================

Not enforced, as in keystone: issuing a token, and ``POST /v3/users/{id}/password`` (the original
password is the proof; the token is not even looked at). The order is keystone's: a create's or
update's body is validated first (400), then the token (401), then the policy (403), and only
then is the target looked up, so a refused caller gets 403 for a missing object too. A refusal
is keystone's ``ForbiddenAction``. Most cases of ``tests/sim/test_keystone_policy.py`` were also
tried by hand on a real keystone 30.0.0, with the same status and refusal message each time (the
rest follow from the same rules in keystone's source); the one known difference is that a real
member token also carries the implied ``reader`` role.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from dcorch.sim.http import KeystoneError
from dcorch.sim.records import NULL_DOMAIN
from dcorch.sim.state import CloudState, Identity
from dcorch.sim.tokens import TokenPayload

FORBIDDEN: Final = "You are not authorized to perform the requested action: {action}."
"""keystone's ``ForbiddenAction`` message (shown in full: it names no secret)."""

MANAGED_ROLES: Final = frozenset({"manager", "member", "reader"})
"""Roles a ``manager`` may read (keystone's ``domain_managed_target_role`` default)."""


def has_role(identity: Identity, token: TokenPayload, name: str) -> bool:
    """Whether the token carries the global role ``name`` on its project (direct or by group).

    O(1) for a direct grant (the engine's admin on every request); groups are scanned only
    when that misses.
    """
    if token.project_id is None:
        return False
    role = identity.find_name("role", NULL_DOMAIN, name)
    if role is None:
        return False
    role_id = role["role"]["id"]
    if (token.project_id, "user", token.user_id, role_id) in identity.assignments:
        return True
    return any(
        (token.project_id, "group", group_id, role_id) in identity.assignments
        for group_id, group in identity.groups.items()
        if token.user_id in group["local_user_ids"]
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the token and what the rules may ask of its roles."""

    identity: Identity
    token: TokenPayload

    def has(self, role: str) -> bool:
        return has_role(self.identity, self.token, role)


@dataclass(frozen=True, slots=True)
class Target:
    """What a rule may compare the caller with (keystone's ``target.*``)."""

    user_id: str | None = None
    project_id: str | None = None
    role_name: str | None = None
    subject_user_id: str | None = None
    """The user of the ``X-Subject-Token`` (token APIs)."""


Rule = Callable[[Caller, Target], bool]


def _admin(caller: Caller, target: Target) -> bool:
    return caller.has("admin")


def _admin_or_user(caller: Caller, target: Target) -> bool:
    return caller.token.user_id == target.user_id or _admin(caller, target)


def _admin_or_project(caller: Caller, target: Target) -> bool:
    project = caller.token.project_id
    return (project is not None and project == target.project_id) or _admin(caller, target)


def _admin_or_manager_of_role(caller: Caller, target: Target) -> bool:
    managed = target.role_name in MANAGED_ROLES and caller.has("manager")
    return managed or _admin(caller, target)


def _admin_or_subject(caller: Caller, target: Target) -> bool:
    return caller.token.user_id == target.subject_user_id or _admin(caller, target)


def _admin_service_or_subject(caller: Caller, target: Target) -> bool:
    return _admin_or_subject(caller, target) or caller.has("service")


def _admin_or_service(caller: Caller, target: Target) -> bool:
    return _admin(caller, target) or caller.has("service")


RULES: Final[Mapping[str, Rule]] = {
    "identity:get_user": _admin_or_user,
    "identity:list_groups_for_user": _admin_or_user,
    "identity:get_project": _admin_or_project,
    "identity:get_role": _admin_or_manager_of_role,
    "identity:validate_token": _admin_service_or_subject,
    "identity:check_token": _admin_or_subject,
    "identity:revoke_token": _admin_or_subject,
    "identity:list_revoke_events": _admin_or_service,
}
"""The actions that allow more than ``admin``; every other action needs ``admin``."""


def authorize(
    cloud: CloudState, token: TokenPayload, action: str, target: Target | None = None
) -> None:
    """Pass if keystone's default policy lets the token's user do ``action`` on ``target``.

    (``keystone_auth.enforce`` checks the token first, then this.)

    Raises:
        KeystoneError: 403, keystone's ``ForbiddenAction``.
    """
    rule = RULES.get(action, _admin)
    if not rule(Caller(cloud.identity, token), target or Target()):
        raise KeystoneError(403, FORBIDDEN.format(action=action))
