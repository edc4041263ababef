"""Log redaction and the forwarding helpers (header rewriting, URLs, bodies)."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from typing import Any

import httpx
import pytest

from dcorch.proxy.errors import BodyTooLarge, fault_body
from dcorch.proxy.forwarding import (
    client_headers,
    decoded_body,
    read_capped,
    upstream_headers,
    upstream_url,
)
from dcorch.proxy.redaction import MASK, RedactingFilter, redact, redact_text


def test_redact_masks_secret_keys_at_any_depth_without_touching_the_input() -> None:
    body: dict[str, Any] = {
        "user": {"name": "u", "password": "p", "original_password": "o"},
        "items": [{"private_key": "k", "X-Auth-Token": "t"}, ("passwd", {"Secret": 1})],
        "keystone": {"url": "kept"},
    }
    assert redact(body) == {
        "user": {"name": "u", "password": MASK, "original_password": MASK},
        "items": [{"private_key": MASK, "X-Auth-Token": MASK}, ["passwd", {"Secret": MASK}]],
        "keystone": MASK,  # "keystone" contains "key": masking too much is the safe side
    }
    assert body["user"]["password"] == "p"


def test_redact_text_masks_quoted_pairs() -> None:
    trace = "headers=[(b'x-subject-token', b'gAAAA-tok'), (b'vary', b'X-Auth-Token')]"
    assert redact_text(trace) == (
        f"headers=[(b'x-subject-token', b'{MASK}'), (b'vary', b'X-Auth-Token')]"
    )
    assert redact_text("{'password': 'p', 'name': 'n'}") == f"{{'password': '{MASK}', 'name': 'n'}}"
    assert redact_text('{"X-Auth-Token": "t"}') == f'{{"X-Auth-Token": "{MASK}"}}'


def test_redacting_filter(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.proxy.redaction")
    caplog.set_level(logging.INFO, logger=logger.name)
    caplog.handler.addFilter(RedactingFilter())
    logger.info("body %s", {"user": {"password": "hunter2"}})
    logger.info("%(password)s and %(name)s", {"password": "hunter3", "name": "n"})
    logger.info("trace %s", "[(b'x-auth-token', b'hunter4')]")
    assert "hunter" not in caplog.text
    assert "n" in caplog.text


def test_redacting_filter_masks_the_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.proxy.redaction.exc")
    logger.addFilter(RedactingFilter())
    caplog.set_level(logging.ERROR, logger=logger.name)
    try:
        raise ValueError("bad {'X-Auth-Token': 'hunter5'} and password=hunter6&next=1")
    except ValueError:
        logger.exception("request failed")
    [record] = caplog.records
    assert record.exc_info is None  # no later formatter can render the raw exception again
    assert "Traceback (most recent call last)" in caplog.text
    assert f"ValueError: bad {{'X-Auth-Token': '{MASK}'}} and password={MASK}&next=1" in caplog.text
    assert "hunter" not in caplog.text


def test_redact_text_masks_unquoted_assignments() -> None:
    assert redact_text("GET /x?token=abc&id=1 password=p4ss, key=k") == (
        f"GET /x?token={MASK}&id=1 password={MASK}, key={MASK}"
    )
    assert redact_text("keystone_url=http://h:5000 token_cache_ttl=30") == (
        "keystone_url=http://h:5000 token_cache_ttl=30"
    )


def test_fault_body_shape() -> None:
    outer = json.loads(fault_body(401, "Missing authentication token"))
    assert json.loads(outer["error_message"]) == {
        "faultcode": "Client",
        "faultstring": "Missing authentication token",
        "debuginfo": None,
    }
    assert json.loads(json.loads(fault_body(503, "x"))["error_message"])["faultcode"] == "Server"


MASTER = httpx.URL("http://10.0.0.2:5000")


def headers_of(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    result: dict[bytes, list[bytes]] = {}
    for k, v in pairs:
        result.setdefault(k.lower(), []).append(v)
    return result


def test_upstream_headers() -> None:
    client = [
        (b"host", b"proxy:25000"),
        (b"x-auth-token", b"t"),
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"keep-alive", b"5"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"expect", b"100-continue"),
        (b"content-length", b"10"),
        (b"accept", b"a"),
        (b"accept", b"b"),
        (b"openstack-system-scope", b"all"),
    ]
    sent = headers_of(
        upstream_headers(
            client,
            upstream=MASTER,
            scheme="https",
            client_address="192.168.1.9",
            keep_content_length=False,
        )
    )
    assert sent[b"host"] == [b"10.0.0.2:5000"]
    assert sent[b"x-forwarded-server"] == [b"proxy:25000"]
    assert sent[b"x-forwarded-scheme"] == [b"https"]
    assert sent[b"x-forwarded-for"] == [b"192.168.1.9"]
    assert sent[b"x-domain-id"] == [b""]
    assert sent[b"x-domain-name"] == [b""]
    assert sent[b"openstack-system-scope"] == [b"all"]
    assert sent[b"accept"] == [b"a", b"b"]
    assert sent[b"x-auth-token"] == [b"t"]
    for gone in (b"connection", b"x-hop", b"keep-alive", b"transfer-encoding", b"te"):
        assert gone not in sent
    for gone in (b"upgrade", b"expect", b"content-length"):
        assert gone not in sent


def test_upstream_headers_keep_content_length_and_default_port() -> None:
    sent = headers_of(
        upstream_headers(
            [(b"host", b"p"), (b"content-length", b"3")],
            upstream=httpx.URL("https://master/identity"),
            scheme="http",
            client_address=None,
            keep_content_length=True,
        )
    )
    assert sent[b"content-length"] == [b"3"]
    assert sent[b"host"] == [b"master:443"]
    assert b"x-forwarded-for" not in sent


def test_client_headers() -> None:
    upstream = httpx.Headers(
        [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"12"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Connection", b"close"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Weird", b"caf\xe9"),
        ]
    )
    buffered = client_headers(upstream, streamed=False)
    assert buffered == [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Weird", "caf\xe9"),
    ]
    assert ("Content-Length", "12") in client_headers(
        httpx.Headers([("Content-Length", "12")]), streamed=True
    )


@pytest.mark.parametrize(
    ("base", "raw_path", "query", "expected"),
    [
        ("http://m:5000", b"/v3/users", b"", "http://m:5000/v3/users"),
        ("http://m:5000/", b"/v3/users", b"a=1&b=%20", "http://m:5000/v3/users?a=1&b=%20"),
        ("http://m/identity/", b"/v3/a%2Fb", b"", "http://m/identity/v3/a%2Fb"),
    ],
)
def test_upstream_url(base: str, raw_path: bytes, query: bytes, expected: str) -> None:
    assert str(upstream_url(httpx.URL(base), raw_path, query)) == expected


def test_decoded_body() -> None:
    data = b'{"a": 1}'
    assert decoded_body(gzip.compress(data), "gzip") == data
    assert decoded_body(zlib.compress(data), "deflate") == data
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decoded_body(raw_deflate.compress(data) + raw_deflate.flush(), "deflate") == data
    assert decoded_body(data, None) == data
    assert decoded_body(b"junk", "gzip") == b"junk"
    assert decoded_body(data, "br") == data


class _chunks:
    """An async iterator with nothing to finalize when the reader stops early."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = list(parts)

    def __aiter__(self) -> _chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.parts:
            raise StopAsyncIteration
        return self.parts.pop(0)


async def test_read_capped() -> None:
    assert await read_capped(_chunks(b"ab", b"cd"), 4, None) == b"abcd"
    with pytest.raises(BodyTooLarge):
        await read_capped(_chunks(b"ab", b"cde"), 4, None)
    with pytest.raises(BodyTooLarge):
        await read_capped(_chunks(), 4, 5)
