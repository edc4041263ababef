"""The audit id of a keystone fernet token, for token revocation events.

Subclouds learn of a revoked token through a ``revoke_events`` work order keyed by its audit id,
inside the encrypted token (docs/behaviour.md#token-revocation-audit-id). A fernet token is
``urlsafe_b64(Fernet(msgpack([version, user_id, methods, project_id, expires_at, ...,
audit_ids])))``, ``=`` padding stripped; audit ids are unpadded urlsafe base64 of random bytes.

Keys: the master's fernet repository, sysinv's ``GET /v1/fernet_repo`` (``{"id", "key"}`` list),
fetched with dcorch's own credentials (docs/behaviour.md#token-revocation-audit-id): sysinv gives
the repository to admins only, and the client may be a non-admin revoking its own token, or its
token may be gone already. The real proxy fetched them per revocation
(docs/behaviour.md#proxy-weak-spots); :class:`CachedFernetKeys` keeps them briefly, and
:func:`extract_audit_id` refetches them if a token fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgpack
import trio
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

logger = logging.getLogger(__name__)

FERNET_KEYS_TTL = 60.0
"""Seconds a fetched key list is reused (keys rotate weekly; a miss triggers a refetch)."""


class AuditIdError(Exception):
    """The token is not a fernet token these keys decrypt, or its payload has no audit id."""


class FernetKeysUnavailable(Exception):
    """The master's fernet keys could not be fetched (sysinv unreachable, refusing, failing)."""


KeyFetch = Callable[[], Awaitable[Any]]
"""Fetches the master's ``/v1/fernet_repo`` answer as dcorch itself (service credentials).

Raises :class:`FernetKeysUnavailable` when it cannot; the service builds it from its one master
client, so the proxy holds no credentials and makes no authenticated call of its own.
"""


class FernetKeySource(Protocol):
    """Where the master's fernet keys come from."""

    async def get_keys(self, *, refresh: bool = False) -> Sequence[str]:
        """The current keys (urlsafe base64 text); ``refresh`` bypasses any cache.

        Raises:
            FernetKeysUnavailable: they could not be fetched.
            AuditIdError: the answer holds no keys.
        """
        ...


class CachedFernetKeys:
    """A :class:`FernetKeySource` over a :data:`KeyFetch`, reusing an answer for ``ttl`` s."""

    def __init__(
        self,
        fetch: KeyFetch,
        *,
        ttl: float = FERNET_KEYS_TTL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._keys: list[str] = []
        self._expires = float("-inf")

    async def get_keys(self, *, refresh: bool = False) -> Sequence[str]:
        if not refresh and self._keys and self._clock() < self._expires:
            return self._keys
        keys = parse_fernet_repo(await self._fetch())
        self._keys = keys
        self._expires = self._clock() + self._ttl
        return keys


def parse_fernet_repo(body: Any) -> list[str]:
    """The key texts of a ``/v1/fernet_repo`` answer (a list of ``{"id", "key"}``)."""
    if isinstance(body, dict):  # tolerate a wrapped list, {"keys": [...]}
        body = next((v for v in body.values() if isinstance(v, list)), None)
    if not isinstance(body, list):
        raise AuditIdError("fernet_repo answer is not a list")
    keys = [entry["key"] for entry in body if isinstance(entry, dict) and entry.get("key")]
    if not keys:
        raise AuditIdError("fernet_repo holds no keys")
    return [str(key) for key in keys]


def audit_id_from_token(token: str, keys: Sequence[str]) -> str:
    """Decrypt a fernet token with ``keys`` and return its audit id as keystone shows it.

    Raises:
        AuditIdError: bad keys, a token they do not decrypt, or a payload without audit ids.
    """
    try:
        crypto = MultiFernet([Fernet(key) for key in keys])
    except (ValueError, binascii.Error, TypeError) as exc:
        raise AuditIdError("invalid fernet key") from exc
    padded = token + "=" * (-len(token) % 4)
    try:
        payload = crypto.decrypt(padded.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, TypeError) as exc:
        raise AuditIdError("token does not decrypt with the master's keys") from exc
    return audit_id_from_payload(payload)


def audit_id_from_payload(payload: bytes) -> str:
    """The first audit id of a decrypted keystone token payload.

    msgpack gives ``bytes`` if keystone packed it as binary (modern msgpack), ``str`` if as a raw
    string (old msgpack); a raw string that is not UTF-8 is re-read in raw mode, not failed.
    """
    try:
        try:
            values = msgpack.unpackb(payload, raw=False)
        except UnicodeDecodeError:
            values = msgpack.unpackb(payload, raw=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise AuditIdError("token payload is not msgpack") from exc
    if not isinstance(values, list | tuple) or not values:
        raise AuditIdError("token payload is not a list")
    audit_ids = values[-1]
    if not isinstance(audit_ids, list | tuple) or not audit_ids:
        raise AuditIdError("token payload has no audit ids")
    first = audit_ids[0]
    if isinstance(first, bytes) and first:
        return base64.urlsafe_b64encode(first).rstrip(b"=").decode("ascii")
    if isinstance(first, str) and first:
        return first
    raise AuditIdError("token audit id is empty or of an unknown type")


async def extract_audit_id(token: str, source: FernetKeySource) -> str | None:
    """The audit id of ``token``, or ``None`` (logged, never raised) when it cannot be found.

    Cached keys first, then refetched ones: a key rotation since the last fetch must not lose it.
    """
    try:
        keys = await source.get_keys()
        try:
            return audit_id_from_token(token, keys)
        except AuditIdError:
            pass  # maybe the keys rotated since they were fetched; the refetch is below
        fresh = await source.get_keys(refresh=True)
        return audit_id_from_token(token, fresh)
    except (AuditIdError, FernetKeysUnavailable) as exc:
        # Both messages are ours and name no secret (never a token or a key).
        logger.warning("no audit id for the revoked token: %s", exc)
        return None
