"""Forward a request to the master and relay its answer (docs/behaviour.md#proxy-pipeline).

The master gets the client's method, raw path, query, body and headers minus hop-by-hop ones,
plus the real proxy's forwarding headers (``X-Forwarded-Server`` = the original ``Host``,
``X-Forwarded-Scheme``, ``X-Forwarded-For`` when absent, ``Host`` = the master's ``host:port``,
and ``X-Domain-Id`` / ``X-Domain-Name`` / ``OpenStack-System-Scope`` empty when missing).

The client gets the master's status, headers (minus hop-by-hop) and body bytes as received
(still content-encoded). A buffered body gets a recomputed Content-Length; a streamed one keeps
the master's, right as the bytes are relayed unchanged (our server re-chunks a chunked answer).

Requests are built as :class:`httpx.Request` and sent with ``client.send`` so the client's own
default headers (User-Agent, Accept-Encoding, ...) are never added.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType

import httpx
from quart.wrappers.response import ResponseBody

from dcorch.proxy.errors import BodyTooLarge

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 7.6.1), plus ``Expect``."""

DEFAULTED_EMPTY = (b"x-domain-id", b"x-domain-name", b"openstack-system-scope")
"""Set to ``""`` when missing, as the real TransparentProxy did."""

RawHeaders = Sequence[tuple[bytes, bytes]]


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in raw ASGI headers."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers named by ``Connection`` (also hop-by-hop)."""
    names: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(part.strip().lower() for part in value.split(b","))
    return frozenset(names)


def _end_to_end(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    drop = HOP_BY_HOP | _connection_listed(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def upstream_headers(
    client_headers: RawHeaders,
    *,
    upstream: httpx.URL,
    scheme: str,
    client_address: str | None,
    keep_content_length: bool,
) -> list[tuple[bytes, bytes]]:
    """The headers to send to the master for a client request's raw ASGI headers.

    ``keep_content_length``: for a streamed body (httpx computes a buffered body's).
    """
    original_host = header(client_headers, b"host") or b""
    result = [
        (k, v)
        for k, v in _end_to_end(client_headers)
        if k.lower() != b"host" and (keep_content_length or k.lower() != b"content-length")
    ]
    present = {k.lower() for k, _ in result}
    port = upstream.port or (443 if upstream.scheme == "https" else 80)
    result.append((b"Host", f"{upstream.host}:{port}".encode("idna")))
    result.append((b"X-Forwarded-Server", original_host))
    result.append((b"X-Forwarded-Scheme", scheme.encode("latin-1")))
    if b"x-forwarded-for" not in present and client_address:
        result.append((b"X-Forwarded-For", client_address.encode("latin-1")))
    for name in DEFAULTED_EMPTY:
        if name not in present:
            result.append((name, b""))
    return result


def client_headers(upstream: httpx.Headers, *, streamed: bool) -> list[tuple[str, str]]:
    """The master's response headers as the client gets them.

    Decoded as latin-1, as httpx and our server treat header bytes, so relayed byte for byte.
    """
    raw = upstream.raw
    drop = {b"content-length"} if not streamed or header(raw, b"transfer-encoding") else set()
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in _end_to_end(raw)
        if k.lower() not in drop
    ]


def upstream_url(base: httpx.URL, raw_path: bytes, query_string: bytes) -> httpx.URL:
    """``base`` (which may have a path prefix) joined with the client's raw path and query."""
    target = base.raw_path.split(b"?", 1)[0].rstrip(b"/") + raw_path
    if query_string:
        target += b"?" + query_string
    return base.copy_with(raw_path=target)


class non_empty:  # used like the generator function it replaced, so its name stays
    """``chunks`` without the empty ones, which a chunked encoder could take for the end.

    An iterator object, not an async generator: one left unfinished (the client or the master
    stopped mid-body, ``./just fuzz``'s raw requests) needs no closing, where a generator is
    finalised by the garbage collector, outside any nursery, with a ResourceWarning.
    """

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(chunks)

    def __aiter__(self) -> non_empty:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunk = await anext(self._chunks)
            if chunk:
                return chunk


class UpstreamBody(ResponseBody):
    """The master's response body relayed chunk by chunk (raw, still content-encoded).

    Quart enters it as an async context manager around sending, so the upstream response is
    closed (connection pooled or dropped) when sending ends, fails or is cancelled (client gone).
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = self._relay()

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def __aenter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._chunks.aclose()
        await self._response.aclose()


async def read_raw(response: httpx.Response) -> bytes:
    """All of a streamed response's raw (still content-encoded) bytes; closes the response."""
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


def decoded_body(raw: bytes, content_encoding: str | None) -> bytes:
    """``raw`` without gzip/deflate content coding, for parsing only (the client gets ``raw``).

    Unknown codings are returned as they are; parsing them then fails and no work is derived.
    """
    coding = (content_encoding or "").strip().lower()
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS)
    except zlib.error:
        return raw
    return raw


async def read_capped(chunks: AsyncIterable[bytes], limit: int, declared: int | None) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    Raises:
        BodyTooLarge: the declared Content-Length or the bytes received exceed ``limit``.
    """
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)
