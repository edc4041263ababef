"""What text a database column can hold, for every door text comes in by.

Request bodies are JSON, and JSON can carry what no column stores: ``\\u0000`` (PostgreSQL's
text refuses a NUL) and ``\\ud800`` (a lone surrogate, which no UTF-8 encoder takes, so SQLite's
driver fails too). The v1 API and the DB-sync contract refuse such text with a 400 naming the
field instead of passing it to the database (``./just fuzz`` found both answered 500).
"""

from __future__ import annotations


def storable_text(value: str) -> bool:
    """True when ``value`` holds no NUL and encodes as UTF-8."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NUL_FREE_PATTERN = r"^[^\x00]*$"
""":func:`storable_text` as a JSON Schema pattern, for the OpenAPI document: the NUL half (no
pattern can name a lone surrogate, and JSON text that is valid UTF-8 holds none)."""
