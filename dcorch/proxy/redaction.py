"""Keep secrets out of logs.

Request bodies that the proxy intercepts carry clear passwords (keystone user create, password
change), password hashes (sysinv iuser) and private keys (certificate install); the headers carry
tokens. The proxy therefore logs only the method, the path, the status and a work order's
type/operation/id. As a second line of defence, :class:`RedactingFilter` masks any dict handed to
a log call whose keys look secret, and :func:`redact` does the same for code that wants to log a
structure on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

MASK = "******"
"""What a secret value is replaced with (the real system's mask)."""

SECRET_KEY_PARTS = ("password", "passwd", "key", "token", "secret")
"""A dict key containing any of these (case-insensitive) holds a secret."""


def is_secret_key(key: object) -> bool:
    """True when a mapping key names a secret (``original_password``, ``X-Auth-Token``, ...)."""
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """Return a copy of ``value`` with every secret-keyed entry masked, at any depth.

    Mappings, lists and tuples are copied; anything else is returned as is. The input is never
    modified, because it is usually the request body that is still to be forwarded.
    """
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secret-keyed entries of dicts passed as log arguments.

    Install it on a handler or logger (the proxy installs it on ``dcorch.proxy``). It never
    drops a record; it rewrites ``record.args`` in place.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            record.args = redact(args)
        elif isinstance(args, tuple):
            record.args = tuple(redact(arg) for arg in args)
        return True
