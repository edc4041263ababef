"""Keep secrets out of logs.

Intercepted bodies carry clear passwords (keystone user create, password change), password
hashes (sysinv iuser) and private keys (certificate install); headers carry tokens. So the proxy
logs only method, path, status and a work order's type/operation/id. As defence in depth,
:class:`RedactingFilter` masks secret-keyed dicts in log calls; :func:`redact` does it on demand.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "******"
"""What a secret value is replaced with (the real system's mask)."""

SECRET_KEY_PARTS = ("password", "passwd", "key", "token", "secret")
"""A dict key containing any of these (case-insensitive) holds a secret."""


_QUOTED_SECRET_PAIR = re.compile(
    r"""(?P<q>['"])(?P<name>[^'"]*(?:password|passwd|key|token|secret)[^'"]*)(?P=q)"""
    r"""(?P<sep>\s*[:,]\s*)(?P<b>b?)(?P<vq>['"])[^'"]*(?P=vq)""",
    re.IGNORECASE,
)
"""A quoted secret name followed by its quoted value: ``'X-Auth-Token': '...'`` or
``(b'x-subject-token', b'...')`` as dict/header reprs appear in third-party debug traces."""


_SECRET_ASSIGNMENT = re.compile(
    r"""(?P<name>(?<![\w-])[\w-]*(?:password|passwd|key|token|secret))=[^\s&,;'")\]]+""",
    re.IGNORECASE,
)
"""An unquoted ``name=value`` whose name *ends* with a secret word: ``?token=...`` in a URL or
``password=...`` in an exception message. ``keystone_url=`` or ``token_cache_ttl=`` only mention
one and are kept."""

_FORMATTER = logging.Formatter()


def redact_text(text: str) -> str:
    """Mask the values of quoted secret-named pairs and ``secret=value`` in formatted text."""
    text = _QUOTED_SECRET_PAIR.sub(
        lambda m: f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['b']}{m['vq']}{MASK}{m['vq']}", text
    )
    return _SECRET_ASSIGNMENT.sub(lambda m: f"{m['name']}={MASK}", text)


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
    """A logging filter that masks secrets in log records; it never drops a record.

    Secret-keyed entries of dict log arguments are masked; if the formatted message still shows
    a quoted secret-named pair (httpcore's DEBUG trace prints raw headers, ``X-Subject-Token``
    included), it is replaced by its masked text. A traceback (``logger.exception``) is formatted
    and masked here too: an exception's text often quotes the body or headers it failed on.

    The proxy installs it on its module loggers; a logger's filter misses other loggers' records,
    so the service should also add it to its log *handlers* (third-party DEBUG logging).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            record.args = redact(args)
        elif isinstance(args, tuple):
            record.args = tuple(redact(arg) for arg in args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed log call; leave it to the handler
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        _redact_exception(record)
        return True


def _redact_exception(record: logging.LogRecord) -> None:
    """Replace the record's exception by its formatted, masked text.

    Formatters print a ready ``exc_text`` as is; ``exc_info`` is dropped so that no formatter (a
    JSON one, say) can render the raw exception, secrets included, again.
    """
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = _FORMATTER.formatException(record.exc_info)
    record.exc_info = None
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
