"""What counts as a service URL, for the settings and the v1 API alike.

A master or subcloud service address is an absolute ``http``/``https`` URL with a host; anything
else (``controller:5000``, a relative path, ``ftp://``) would fail far from where it was written,
so it is refused where it enters: at start-up naming the key, or with a 400 naming the field.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit


def http_url_problem(text: str) -> str | None:
    """Why ``text`` is not an absolute http(s) URL with a host, or ``None`` if it is one."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        return f"must be an absolute http(s) URL, got {text!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an absolute http(s) URL, got {text!r}"
    if parts.query or parts.fragment or any(c.isspace() for c in text):
        return f"must be a service root without query, fragment or spaces, got {text!r}"
    return None


_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
r"""Python's ``str.isspace`` and ECMA's ``\s`` together, spelled out: the two differ."""
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    rf"({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}|"
    rf"({_H}:){{1,4}}(:{_H}){{1,3}}|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}|"
    rf"{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:)"
)
"""An IPv6 address in hex groups (no embedded IPv4, no zone)."""
_HOST = rf"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[({_IPV6})\])"
SERVICE_URL_PATTERN = rf"https?://{_HOST}(:{_PORT})?(/[^{_SPACE}?#\x00]*)?"
"""A subcloud service URL the v1 API takes, whole (``fullmatch``): a plain host name, IPv4
address or bracketed IPv6 one, an optional port, a path without spaces; a subset of
:func:`http_url_problem`'s, so the OpenAPI document can state it exactly (its JSON Schema regex
engine differs from Python's)."""
_SERVICE_URL = re.compile(SERVICE_URL_PATTERN)


def service_url_problem(text: str) -> str | None:
    """Why ``text`` is not a subcloud service URL (:data:`SERVICE_URL_PATTERN`), or ``None``."""
    if problem := http_url_problem(text):
        return problem
    if not _SERVICE_URL.fullmatch(text):
        return f"must be http(s)://<host name, IPv4 or [IPv6]>[:port][/path], got {text!r}"
    return None
