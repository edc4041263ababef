"""X.509 for the simulated sysinv: parsing uploads as sysinv does, making test certificates.

Real parsing (``cryptography``), because dcorch reads the System Controller's CA files itself
(docs/behaviour.md#platform-driver) and must find the signature sysinv gave: ``<mode>_<serial>``
with the serial number in decimal, as sysinv's ``certificate_install`` computes it. This module
is the simulator's own implementation of that rule, kept apart from dcorch's, so a test checks
one against the other instead of a parser against itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from functools import lru_cache
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
DEFAULT_START: Final = "2024-01-01T00:00:00+00:00"
DEFAULT_EXPIRY: Final = "2034-01-01T00:00:00+00:00"


@dataclass(frozen=True, slots=True)
class PemCert:
    """One CERTIFICATE block of an uploaded PEM file."""

    text: str
    """The block, BEGIN/END lines included."""
    serial: str
    """The serial number in decimal (sysinv's ``str(cert.serial_number)``)."""
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    is_ca: bool

    @property
    def start_date(self) -> str:
        return self.not_before.isoformat()

    @property
    def expiry_date(self) -> str:
        return self.not_after.isoformat()

    def signature(self, mode: str) -> str:
        """sysinv's signature: ``<mode>_<serial>``."""
        return f"{mode}_{self.serial}"

    def validity_error(self, now: datetime) -> str | None:
        """sysinv's refusal of a certificate outside its validity period, or None."""
        if now <= self.not_before or now >= self.not_after:
            return f"certificate is not valid before {self.not_before} nor after {self.not_after}"
        return None


def parse_pem_certs(pem: str) -> list[PemCert]:
    """The CERTIFICATE blocks of a PEM text, in order (key blocks are skipped).

    Raises:
        ValueError: a CERTIFICATE block that is not a valid X.509 certificate.
    """
    certs = []
    for match in _BLOCK.finditer(pem):
        if match.group(1) != "CERTIFICATE":
            continue
        block = match.group(0)
        cert = x509.load_pem_x509_certificate(block.encode())
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        certs.append(
            PemCert(
                text=block + "\n",
                serial=str(cert.serial_number),
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                is_ca=is_ca,
            )
        )
    return certs


def make_test_pem(
    common_name: str,
    *,
    not_before: str | None = None,
    not_after: str = DEFAULT_EXPIRY,
    ca: bool = True,
) -> str:
    """A self-signed X.509 certificate (a CA unless ``ca=False``), as PEM.

    The same arguments give the same PEM (cached), and the serial number is derived from them,
    so distinct names or dates give distinct sysinv signatures. ``not_before``/``not_after``
    are ISO 8601 texts (UTC when they carry no zone); ``not_before`` defaults to
    :data:`DEFAULT_START`, or a year before an earlier ``not_after``.
    """
    end = _utc(not_after)
    start = _utc(not_before or DEFAULT_START)
    if not_before is None and start >= end:
        start = end - timedelta(days=365)
    return _make_pem(common_name, start, end, ca)


@lru_cache(maxsize=256)
def _make_pem(common_name: str, not_before: datetime, not_after: datetime, ca: bool) -> str:
    seed = f"{common_name}|{not_before.isoformat()}|{not_after.isoformat()}|{ca}".encode()
    serial = int.from_bytes(hashlib.sha256(seed).digest()[:16], "big") >> 1 or 1
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body (a repeated field keeps its first value).

    Read with the standard library's MIME parser, as dcorch's platform driver reads the upload
    it replays to the subclouds: a delimiter starts a line and ends one (RFC 2046), a boundary
    is ASCII. Splitting on the boundary wherever it appeared kept parts (junk before the first
    boundary, ``boundary=x;y``) that no subcloud's install then saw (found by ``./just fuzz``).

    Raises:
        ValueError: not multipart, or no boundary.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("content type must be multipart/form-data")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if message.get_boundary() is None:
        raise ValueError("multipart boundary missing")
    fields: dict[str, bytes] = {}
    for part in message.walk():
        name = None if part.is_multipart() else part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            data = part.get_payload(decode=True)
            fields.setdefault(name, data if isinstance(data, bytes) else b"")
    return fields
