"""PEM handling for the simulated sysinv: textual parsing, stable signatures, test certificates.

No real X.509 parsing: sysinv's signature is ``<mode>_<serial>`` and a PEM need only yield the
same one everywhere, so the "serial" hashes the block's base64 text. A :func:`make_test_pem`
block (base64 JSON) carries validity dates (tests install expired CAs); others get fixed dates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
DEFAULT_START: Final = "2024-01-01T00:00:00+00:00"
DEFAULT_EXPIRY: Final = "2034-01-01T00:00:00+00:00"


@dataclass(frozen=True, slots=True)
class PemCert:
    """One CERTIFICATE block of an uploaded PEM file."""

    text: str
    """The block, BEGIN/END lines included."""
    serial: str
    subject: str
    start_date: str
    expiry_date: str

    def signature(self, mode: str) -> str:
        """sysinv's signature: ``<mode>_<serial>``."""
        return f"{mode}_{self.serial}"


def parse_pem_certs(pem: str) -> list[PemCert]:
    """The CERTIFICATE blocks of a PEM text, in order (key blocks are skipped)."""
    certs = []
    for match in _BLOCK.finditer(pem):
        if match.group(1) != "CERTIFICATE":
            continue
        body = "".join(match.group(2).split())
        serial = hashlib.sha256(body.encode()).hexdigest()[:24]
        subject, start, expiry = f"CN=sim-{serial[:8]}", DEFAULT_START, DEFAULT_EXPIRY
        try:
            info = json.loads(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            info = None
        if isinstance(info, dict):
            subject = str(info.get("subject", subject))
            start = str(info.get("not_before", start))
            expiry = str(info.get("not_after", expiry))
        certs.append(PemCert(match.group(0), serial, subject, start, expiry))
    return certs


def make_test_pem(
    common_name: str, *, not_before: str = DEFAULT_START, not_after: str = DEFAULT_EXPIRY
) -> str:
    """A fake CERTIFICATE block the simulator understands (distinct per common name/dates)."""
    info = {"subject": f"CN={common_name}", "not_before": not_before, "not_after": not_after}
    body = base64.b64encode(json.dumps(info, sort_keys=True).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body (a repeated field keeps its first value).

    Raises:
        ValueError: not multipart, or no boundary.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("content type must be multipart/form-data")
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if found is None:
        raise ValueError("multipart boundary missing")
    delimiter = b"--" + found.group(1).encode()
    fields: dict[str, bytes] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            fields.setdefault(name.group(1).decode(), data.removesuffix(b"\r\n"))
    return fields
