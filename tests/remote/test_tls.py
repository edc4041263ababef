"""TLS towards the master and the subclouds: verified by default, a CA bundle from settings."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dcorch.remote.errors import SubcloudUnreachable
from dcorch.remote.http import Credentials, HttpSession, open_http_client
from dcorch.settings import TlsSettings

CREDENTIALS = Credentials("admin", "pw", "admin")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_ca_and_server(tmp: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("dcorch test CA"))
        .issuer_name(_name("dcorch test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("subcloud"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def _answer(stream: trio.SSLStream[trio.SocketStream]) -> None:
    """A one-shot HTTP server: reads the request head, answers 200 with a JSON body."""
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        body = b'{"ok": true}'
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        await stream.send_all(head.encode() + body)
        await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # a client that refused our certificate hung up during the handshake


@pytest.fixture
async def https_server(tmp_path: Path, nursery: trio.Nursery) -> tuple[str, Path]:
    """An https server on 127.0.0.1 with a certificate of a private CA: (url, CA file)."""
    ca, cert, key = _write_ca_and_server(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, _answer, 0, context, host="127.0.0.1")
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return f"https://127.0.0.1:{port}", ca


async def _get(tls: TlsSettings, url: str) -> int:
    async with open_http_client(tls, max_connections=2) as client:
        session = HttpSession(client, CREDENTIALS, timeout=5.0)
        response = await session.call("GET", f"{url}/v1/ping", keystone_url=None)
        return response.status_code


async def test_verification_is_on_by_default(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    assert TlsSettings().verify is True
    with pytest.raises(SubcloudUnreachable, match="/v1/ping"):
        await _get(TlsSettings(), url)


async def test_a_ca_file_from_settings_is_trusted(https_server: tuple[str, Path]) -> None:
    url, ca = https_server
    assert await _get(TlsSettings(ca_file=str(ca)), url) == 200


async def test_verification_can_be_turned_off(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    assert await _get(TlsSettings(verify=False), url) == 200
