"""Build one proxy application per endpoint type, with every dependency injected.

No globals: apps in one process (the three listeners, or a test) share only what they are given.
"""

from __future__ import annotations

from typing import Any

import httpx
from quart_trio import QuartTrio

from dcorch import constants as c
from dcorch.asgi import serve_asgi
from dcorch.metrics import Metrics
from dcorch.proxy.auth import TokenCache
from dcorch.proxy.fernet_audit import FernetKeySource
from dcorch.proxy.handler import ProxyHandler
from dcorch.proxy.routes import OK_STATUSES, ROUTES
from dcorch.settings import ProxySettings
from dcorch.work import WorkSink


class ProxyApp(QuartTrio):
    """A quart-trio app whose every request, whatever its path or method, goes to :attr:`handler`.

    ``dispatch_request`` is overridden instead of a catch-all URL rule: werkzeug routing would
    answer 404/405/308 itself for odd methods, double slashes or missing trailing slashes.
    """

    handler: ProxyHandler

    async def dispatch_request(self, request_context: Any = None) -> Any:
        return await self.handler.handle()


def create_proxy_app(
    endpoint_type: str,
    *,
    upstream_url: str,
    work_sink: WorkSink,
    token_cache: TokenCache,
    settings: ProxySettings,
    http_client: httpx.AsyncClient,
    fernet_keys_source: FernetKeySource | None = None,
    metrics: Metrics | None = None,
) -> ProxyApp:
    """A proxy for ``endpoint_type`` (``identity``, ``platform`` or ``usm``).

    Arguments:
        endpoint_type: the service this listener fronts; selects the intercepted routes.
        upstream_url: the master service, e.g. ``http://host:5000`` (a path prefix is kept).
        work_sink: records the work orders; the client is answered only after it returns.
        token_cache: validates client tokens. Pass the process's one cache, shared with the
            other proxies and the v1 API: a token revoked through the identity proxy is dropped
            from it and refused at once everywhere (a second cache would keep it for its ttl).
        settings: the proxy section of the settings.
        http_client: the client for the master, following no redirects and reading no proxy
            variables (:func:`dcorch.remote.http.open_http_client`); the caller closes it.
        fernet_keys_source: the master's fernet keys, to find a revoked token's audit id; None
            (a master without sysinv): keystone tells it, asked before the revocation.
        metrics: counts proxied commands for the v1 API's ``/metrics`` (None: a private one).

    Raises:
        ValueError: unknown endpoint type.
    """
    if endpoint_type not in ROUTES:
        raise ValueError(f"endpoint_type must be one of {sorted(ROUTES)}, got {endpoint_type!r}")
    stored = (
        settings.identity_sync_endpoint
        if endpoint_type == c.ENDPOINT_TYPE_IDENTITY
        else endpoint_type
    )
    handler = ProxyHandler(
        endpoint_type=endpoint_type,
        routes=ROUTES[endpoint_type],
        ok_statuses=OK_STATUSES[endpoint_type],
        stored_endpoint_type=stored,
        upstream_url=upstream_url,
        work_sink=work_sink,
        tokens=token_cache,
        fernet_keys=fernet_keys_source,
        forward_timeout=settings.forward_timeout,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics or Metrics(),
        client=http_client,
    )
    app = ProxyApp(f"dcorch.proxy.{endpoint_type}")
    app.handler = handler
    # Bodies are streamed (pass-through) or capped by the handler (intercepted routes), and a
    # large download may legitimately take longer than quart's default 60 s.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["RESPONSE_TIMEOUT"] = None

    return app


async def serve_proxy(app: ProxyApp, host: str, port: int, **options: Any) -> None:
    """Serve a proxy app: :func:`dcorch.asgi.serve_asgi` as a relay of the master's answers
    (``options``: ``shutdown_trigger``, ``graceful_timeout``, ``task_status``)."""
    await serve_asgi(app, host, port, relay=True, **options)
