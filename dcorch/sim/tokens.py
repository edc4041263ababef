"""Keystone-compatible Fernet tokens and cheap password hashes.

Real Fernet tokens: the proxy extracts audit ids as in production (keys from sysinv ``GET
/v1/fernet_repo``, padding restored, ``MultiFernet``, msgpack, last element's first entry) from::

    [0, user_id, methods_int, project_id, expires_at_float, [audit_id_bytes]]

with 16 random audit-id bytes (shown as unpadded url-safe base64); the token string is the Fernet
token, ``=`` padding stripped, as keystone does. The highest-id key signs; the others decrypt.

Passwords are salted SHA-256 (``sha256$<salt>$<hex>``): the simulator creates thousands of
users per second, so bcrypt's deliberate slowness would dominate every bench.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

import msgpack
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

TOKEN_VERSION: Final = 0
# keystone's default [auth] methods order; a method's bit is 2**index
AUTH_METHODS: Final = (
    "external",
    "password",
    "token",
    "oauth1",
    "mapped",
    "application_credential",
)


def methods_to_int(methods: list[str]) -> int:
    """Pack auth method names into keystone's integer bit set (unknown names are ignored)."""
    value = 0
    for name in methods:
        if name in AUTH_METHODS:
            value |= 1 << AUTH_METHODS.index(name)
    return value


def int_to_methods(value: int) -> list[str]:
    """Unpack keystone's method bit set."""
    return [name for i, name in enumerate(AUTH_METHODS) if value & (1 << i)]


def b64_nopad(raw: bytes) -> str:
    """URL-safe base64 without ``=`` padding (keystone's audit id text)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def restore_padding(text: str) -> bytes:
    """Add back the ``=`` padding keystone strips from tokens."""
    return (text + "=" * (-len(text) % 4)).encode()


def new_fernet_key() -> str:
    """A fresh Fernet key as sysinv's fernet_repo shows it."""
    return Fernet.generate_key().decode()


def hash_password(password: str, salt: str | None = None) -> str:
    """Salted SHA-256, cheap on purpose (see module docstring)."""
    salt = salt if salt is not None else os.urandom(8).hex()
    digest = hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()
    return f"sha256${salt}${digest}"


def check_password(password: str, stored: str) -> bool:
    """Compare a clear password with a :func:`hash_password` hash."""
    try:
        scheme, salt, _ = stored.split("$", 2)
    except ValueError:
        return False
    return scheme == "sha256" and hmac.compare_digest(hash_password(password, salt), stored)


@dataclass(frozen=True, slots=True)
class TokenPayload:
    """What a decrypted token says."""

    user_id: str
    methods: list[str]
    project_id: str | None
    expires_at: float
    audit_id: str
    issued_at: float
    """The Fernet timestamp: whole seconds, as in keystone."""


class TokenCodec:
    """Encrypts and decrypts tokens with one cloud's fernet key set.

    Cached per key set (``state.Platform``): building Fernet objects is a validation's main cost.
    """

    __slots__ = ("_multi",)

    def __init__(self, keys: dict[int, str]) -> None:
        if not keys:
            raise ValueError("fernet key set must not be empty")
        ordered = [Fernet(keys[i].encode()) for i in sorted(keys, reverse=True)]
        self._multi = MultiFernet(ordered)

    def issue(
        self,
        user_id: str,
        methods: list[str],
        project_id: str | None,
        expires_at: float,
        now: float,
    ) -> tuple[str, str]:
        """Return ``(token, audit_id)``."""
        audit = os.urandom(16)
        plain = msgpack.packb(
            [TOKEN_VERSION, user_id, methods_to_int(methods), project_id, expires_at, [audit]]
        )
        token = self._multi.encrypt_at_time(plain, int(now))
        return token.rstrip(b"=").decode(), b64_nopad(audit)

    def decode(self, token: str) -> TokenPayload | None:
        """Decrypt a token; None when it is not one of ours (wrong keys, garbage, bad shape)."""
        try:
            raw = restore_padding(token)
            plain = self._multi.decrypt(raw)
            issued = self._multi.extract_timestamp(raw)
            version, user_id, methods, project_id, expires_at, audits = msgpack.unpackb(plain)
        except (InvalidToken, ValueError, TypeError, UnicodeError, msgpack.UnpackException):
            return None
        if version != TOKEN_VERSION or not audits or not isinstance(user_id, str):
            return None
        return TokenPayload(
            user_id=user_id,
            methods=int_to_methods(int(methods)),
            project_id=project_id,
            expires_at=float(expires_at),
            audit_id=b64_nopad(bytes(audits[0])),
            issued_at=float(issued),
        )
