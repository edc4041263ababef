"""One shared HTTP client for all subcloud and master calls, with tokens and error mapping.

One bounded :class:`httpx.AsyncClient` caps sockets: a client per subcloud means thousands of
sockets and token requests (upstream's "too many open files" and token storms, fixed in 2ac4be0d,
bdab4205, effa8f15: docs/behaviour.md#fixed-upstream); tokens are cached per keystone until a 401.

Every failure leaves as a :mod:`dcorch.remote.errors` exception, translated here in one place
(docs/behaviour.md#error-mapping), so drivers never see an httpx exception.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from dcorch.remote.errors import (
    PermanentSyncError,
    RemoteConflict,
    RemoteNotFound,
    SubcloudUnreachable,
    TransientSyncError,
)
from dcorch.settings import TlsSettings

logger = logging.getLogger(__name__)

DISTCLOUD_HEADER = {"User-Header": "distcloud"}
"""Marks dcorch's own calls.

A dcorch proxy in the path forwards them untouched (docs/behaviour.md#proxy-pipeline).
"""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The admin account dcorch authenticates as, on the master and on every subcloud."""

    username: str
    password: str
    project_name: str
    user_domain: str = "Default"
    project_domain: str = "Default"

    def auth_body(self) -> dict[str, Any]:
        """keystone v3 password auth, project scoped."""
        return {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "domain": {"name": self.user_domain},
                            "password": self.password,
                        }
                    },
                },
                "scope": {
                    "project": {"name": self.project_name, "domain": {"name": self.project_domain}}
                },
            }
        }


def open_http_client(
    tls: TlsSettings,
    *,
    max_connections: int,
    max_keepalive: int | None = None,
    timeout: float | None = None,
) -> httpx.AsyncClient:
    """A bounded client verifying https as ``tls`` says, with no redirects or proxy variables.

    dcorch talks to peers directly. Every outbound client is made here (the proxies', the
    engine's, the harness's); ``timeout``: per-call default (None: each call sets its own).
    """
    keepalive = max_connections if max_keepalive is None else max_keepalive
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive)
    verify: bool | ssl.SSLContext = tls.verify
    if tls.verify and tls.ca_file:
        verify = ssl.create_default_context(cafile=tls.ca_file)
    return httpx.AsyncClient(limits=limits, timeout=timeout, verify=verify, trust_env=False)


class HttpSession:
    """Authenticated, error-mapped calls over one shared client.

    Args:
        client: the shared client (owned by the caller, who closes it).
        credentials: the admin account.
        timeout: seconds for one call (connect + read), ``subcloud_http_timeout``.
    """

    def __init__(self, client: httpx.AsyncClient, credentials: Credentials, timeout: float) -> None:
        self._client = client
        self._credentials = credentials
        self._timeout = httpx.Timeout(timeout)
        self._tokens: dict[str, str] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.token_requests = 0

    async def token(self, keystone_url: str, *, stale: str | None = None) -> str:
        """A token for ``keystone_url``, new if it is ``stale``; a lock per keystone: no storms."""
        lock = self._locks.setdefault(keystone_url, trio.Lock())
        async with lock:
            cached = self._tokens.get(keystone_url)
            if cached is not None and cached != stale:
                return cached
            url = f"{keystone_url}/auth/tokens"
            response = await self._send("POST", url, json=self._credentials.auth_body())
            if response.status_code == 401:
                raise TransientSyncError(
                    f"authentication refused by {keystone_url}", status=401, url=url
                )
            _raise_for_status(response, "POST", url)
            token: str | None = response.headers.get("X-Subject-Token")
            if not token:
                raise TransientSyncError(f"no token in the answer of {keystone_url}", url=url)
            self.token_requests += 1
            self._tokens[keystone_url] = token
            if len(self._locks) > 4 * len(self._tokens) + 64:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return token

    def forget_token(self, keystone_url: str) -> None:
        """Drop the cached token of ``keystone_url``: the next call fetches a new one."""
        self._tokens.pop(keystone_url, None)

    async def call(
        self,
        method: str,
        url: str,
        *,
        keystone_url: str | None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request, authenticated against ``keystone_url`` (None: no token needed).

        A 401 is retried once with a fresh token. Returns only a 2xx/3xx response. Each error
        carries the ``url`` that failed: the token request's or the call's own.

        Raises:
            SubcloudUnreachable: transport failure, timeout, or 502/503/504.
            RemoteNotFound, RemoteConflict, PermanentSyncError: 404, 409, other 4xx.
            TransientSyncError: other 5xx, 408, 429, or a second 401.
        """
        token: str | None = None
        for attempt in range(2):
            all_headers = dict(DISTCLOUD_HEADER)
            if headers:
                all_headers.update(headers)
            if keystone_url is not None:
                token = await self.token(keystone_url, stale=token if attempt else None)
                all_headers["X-Auth-Token"] = token
            response = await self._send(
                method,
                url,
                json=json,
                content=content,
                headers=all_headers,
                params=params,
                files=files,
                data=data,
            )
            if response.status_code == 401 and keystone_url is not None and attempt == 0:
                logger.info("http.token_refused url=%s", keystone_url)
                continue
            _raise_for_status(response, method, url)
            return response
        raise TransientSyncError(f"{method} {url}: unauthorized", status=401, url=url)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, timeout=self._timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise SubcloudUnreachable(f"{method} {url}: timed out", url=url) from exc
        except httpx.TransportError as exc:
            raise SubcloudUnreachable(f"{method} {url}: {type(exc).__name__}", url=url) from exc


UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
"""Answers that say the service cannot serve now (a gateway's, or the service's own)."""


def _raise_for_status(response: httpx.Response, method: str, url: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"{method} {url}: {status} {_excerpt(response)}"
    if status == 404:
        raise RemoteNotFound(message, status=status, url=url)
    if status == 409:
        raise RemoteConflict(message, status=status, url=url)
    if status in UNAVAILABLE_STATUSES:
        # The service (or the keystone behind it: a DB-sync agent that cannot check a token
        # answers 503) is down for now: like a refused connection, the pair keeps its queue
        # and order instead of spending its attempts (docs/behaviour.md#error-mapping).
        raise SubcloudUnreachable(message, url=url)
    if status in (408, 429) or status >= 500 or status == 401:
        raise TransientSyncError(message, status=status, url=url)
    raise PermanentSyncError(message, status=status, url=url)


def _excerpt(response: httpx.Response) -> str:
    text = response.text
    return text if len(text) <= 200 else text[:200] + "..."
