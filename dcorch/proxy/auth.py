"""Token validation against the master keystone, with a short, bounded cache.

The real proxy's keystonemiddleware validated tokens with the service's admin token;
:class:`KeystoneTokenValidator` sends the client's as ``X-Auth-Token`` and ``X-Subject-Token``
(a valid token may validate itself): no service credentials; a bad one gets 401/404.

:class:`TokenCache` keys entries by the token's SHA-256, so it never holds a usable token. A
token revoked through the proxy is dropped at once; one revoked at the master stays usable
through the proxy for at most ``ttl`` seconds, the trade-off keystonemiddleware's cache makes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import trio

from dcorch.proxy.errors import ValidationUnavailable

DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the proxy knows about a valid token (it checks no role: the master's policy does)."""

    roles: frozenset[str]
    """Role names, lower case."""
    expires_at: datetime | None = None
    user_id: str = ""
    project_id: str = ""
    project_name: str = ""
    project_domain_id: str = ""
    audit_ids: tuple[str, ...] = ()
    """The token's own audit id first (keystone's ``audit_ids``): what revocation events name."""


class TokenValidator(Protocol):
    """Decides whether a client token is valid."""

    async def validate(self, token: str) -> TokenInfo | None:
        """The token's details, or ``None`` when it is invalid, expired or revoked.

        Raises:
            ValidationUnavailable: keystone could not give an answer.
        """
        ...


class KeystoneTokenValidator:
    """Validate tokens with ``GET /v3/auth/tokens`` on the master keystone."""

    def __init__(self, keystone_url: str, http_client: httpx.AsyncClient) -> None:
        self._url = keystone_url.rstrip("/") + "/v3/auth/tokens"
        self._client = http_client

    async def validate(self, token: str) -> TokenInfo | None:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token, "Accept": "application/json"}
        try:
            response = await self._client.get(self._url, headers=headers)
        except httpx.HTTPError as exc:
            raise ValidationUnavailable(type(exc).__name__) from None
        if response.status_code in (401, 403, 404):
            return None
        if response.status_code != 200:
            raise ValidationUnavailable(f"keystone answered {response.status_code}")
        try:
            return parse_token_body(response.json())
        except ValueError:
            raise ValidationUnavailable("keystone answered an unreadable token") from None


def parse_token_body(body: Any) -> TokenInfo:
    """Roles, expiry and owner from keystone's ``{"token": {...}}`` answer.

    Raises:
        ValueError: the body is not a keystone token.
    """
    token = body.get("token") if isinstance(body, Mapping) else None
    if not isinstance(token, Mapping):
        raise ValueError("not a keystone token body")
    roles = frozenset(
        str(role["name"]).lower()
        for role in token.get("roles") or ()
        if isinstance(role, Mapping) and role.get("name")
    )
    expires_at = None
    if isinstance(token.get("expires_at"), str):
        expires_at = datetime.fromisoformat(token["expires_at"])
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
    user = token.get("user")
    project = token.get("project")
    project = project if isinstance(project, Mapping) else {}
    domain = project.get("domain")
    return TokenInfo(
        roles=roles,
        expires_at=expires_at,
        user_id=str(user.get("id", "")) if isinstance(user, Mapping) else "",
        project_id=str(project.get("id", "")),
        project_name=str(project.get("name", "")),
        project_domain_id=str(domain.get("id", "")) if isinstance(domain, Mapping) else "",
        audit_ids=tuple(str(a) for a in token.get("audit_ids") or () if isinstance(a, str)),
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenCache:
    """A :class:`TokenValidator` that remembers another validator's positive answers.

    Entries expire after ``ttl`` seconds of ``clock`` (trio's by default: tests can autojump) or
    at the token's expiry, judged against ``wall_clock`` on storing. At most ``max_entries``, least
    recently used out first. Negative answers are not kept: bad tokens cannot push good ones out.
    """

    def __init__(
        self,
        validator: TokenValidator,
        *,
        ttl: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._validator = validator
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[bytes, tuple[float, TokenInfo]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def validate(self, token: str) -> TokenInfo | None:
        key = _key(token)
        entry = self._entries.get(key)
        if entry is not None:
            deadline, cached = entry
            if self._clock() < deadline:
                self._entries.move_to_end(key)
                return cached
            del self._entries[key]
        info = await self._validator.validate(token)
        if info is not None:
            self._store(key, info)
        return info

    def forget(self, token: str) -> None:
        """Drop a token (it was revoked through the proxy)."""
        self._entries.pop(_key(token), None)

    def _store(self, key: bytes, info: TokenInfo) -> None:
        lifetime = self._ttl
        if info.expires_at is not None:
            remaining = (info.expires_at - self._wall_clock()).total_seconds()
            lifetime = min(lifetime, remaining)
        if lifetime <= 0 or self._max_entries <= 0:
            return
        self._entries[key] = (self._clock() + lifetime, info)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
