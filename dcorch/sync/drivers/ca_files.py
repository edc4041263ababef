"""The System Controller's own copies of its CA certificates, found by sysinv signature.

sysinv's certificate listing carries no PEM, so a CA the audit finds missing on a subcloud is
installed from the System Controller's local file, as upstream's sysinv client does when a
request brings no PEM. The directory is ``master.ca_cert_dir`` (docs/behaviour.md#platform-driver):

1. a file named by the signature (``<dir>/<signature>``, or with ``.pem`` / ``.crt``), which is
   how StarlingX keeps its ``ssl_ca`` certificates;
2. otherwise every regular file directly in the directory (``openstack_ca``'s fixed-name file,
   bundles copied by hand), each CERTIFICATE block checked against the signature.

Either way only the one matching CERTIFICATE block is returned: a bundle or a file with a key
never sends more than that certificate. sysinv's signature is ``<mode>_<serial number>``, the
serial in decimal.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Final

import trio
from cryptography import x509

from dcorch.remote.errors import PermanentSyncError

_BLOCK: Final = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)
SUFFIXES: Final = ("", ".pem", ".crt")
"""Tried after the signature for the file named by it."""
MAX_FILE_BYTES: Final = 1024 * 1024
"""Larger files are not CA files; they are skipped, never read whole."""


class CaNotFound(PermanentSyncError):
    """No CA file holds the certificate: the request fails (the next audit tries again)."""


def signature_of(cert: x509.Certificate, mode: str) -> str:
    """sysinv's signature of a certificate installed in ``mode``."""
    return f"{mode}_{cert.serial_number}"


def find_cert(text: str, signature: str, mode: str) -> tuple[str, datetime] | None:
    """The CERTIFICATE block of ``text`` whose signature in ``mode`` is ``signature``, with its
    expiry (notAfter, UTC).

    Blocks that do not parse are skipped: a damaged neighbour does not hide the one wanted.
    """
    for match in _BLOCK.finditer(text):
        block = match.group(0)
        try:
            cert = x509.load_pem_x509_certificate(block.encode())
        except ValueError:
            continue
        if signature_of(cert, mode) == signature:
            return block + "\n", cert.not_valid_after_utc
    return None


def find_ca_pem(directory: str, signature: str, mode: str) -> str:
    """The PEM of the master's CA certificate ``signature`` (blocking: run it in a thread).

    Raises:
        CaNotFound: no directory configured, or no file in it holds the certificate; the
            message names the signature and the path looked at.
    """
    if not directory:
        raise CaNotFound(
            f"no PEM for CA certificate {signature}: master.ca_cert_dir is not set, so the "
            f"System Controller's copy cannot be looked up"
        )
    root = Path(directory)
    if not root.is_dir():
        raise CaNotFound(f"no PEM for CA certificate {signature}: {root} is not a directory")
    named = [root / f"{signature}{suffix}" for suffix in SUFFIXES]
    for path in named:
        if (found := _search(path, signature, mode)) is not None:
            return found
    try:
        listing = list(root.iterdir())
    except OSError as exc:
        raise CaNotFound(
            f"no PEM for CA certificate {signature}: cannot list {root}: {exc}"
        ) from exc
    others = sorted(p for p in listing if p not in named and not p.name.startswith("."))
    for path in others:
        if (found := _search(path, signature, mode)) is not None:
            return found
    raise CaNotFound(
        f"no PEM for CA certificate {signature} in {root}: neither {root / signature}[.pem|.crt] "
        f"nor any other file there ({len(others)} scanned) holds it"
    )


async def find_master_ca(directory: str, signature: str, mode: str) -> str:
    """:func:`find_ca_pem` off the event loop."""
    return await trio.to_thread.run_sync(find_ca_pem, directory, signature, mode)


def _search(path: Path, signature: str, mode: str) -> str | None:
    text = _read(path)
    found = find_cert(text, signature, mode) if text is not None else None
    return found[0] if found is not None else None


def _read(path: Path) -> str | None:
    """A small regular file's text (undecodable bytes replaced), else None."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
