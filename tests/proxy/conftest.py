"""Fixtures: a fake master on port 0 and a factory for proxies in front of it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config

from dcorch.metrics import Metrics
from dcorch.proxy.app import create_proxy_app, serve_proxy
from dcorch.proxy.auth import KeystoneTokenValidator, TokenCache
from dcorch.remote.http import open_http_client
from dcorch.settings import ProxySettings, TlsSettings
from tests.proxy.fakes import FakeMaster, FakeSink, service_fernet_keys

StartProxy = Callable[..., Awaitable[str]]


@pytest.fixture
def master() -> FakeMaster:
    return FakeMaster()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def metrics() -> Metrics:
    """Where the proxies started by ``start_proxy`` count their commands."""
    return Metrics()


@pytest.fixture
async def master_url(nursery: trio.Nursery, master: FakeMaster) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    # The fake's answers carry their own Date/Server when a test wants to compare them.
    config.include_date_header = False
    config.include_server_header = False
    urls = await nursery.start(partial(hypercorn.trio.serve, master, config))
    return str(urls[0])


@pytest.fixture
async def side_client() -> AsyncIterator[httpx.AsyncClient]:
    """The client the token validator and the fernet key source use."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The test's own HTTP client (plays the openstack CLI)."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture
async def master_client() -> AsyncIterator[httpx.AsyncClient]:
    """The proxies' client of the master, as the service makes it."""
    async with open_http_client(TlsSettings(), max_connections=100) as http:
        yield http


@pytest.fixture
def start_proxy(
    nursery: trio.Nursery,
    master_url: str,
    sink: FakeSink,
    side_client: httpx.AsyncClient,
    master_client: httpx.AsyncClient,
    metrics: Metrics,
) -> StartProxy:
    """``await start_proxy("identity", max_body_bytes=...)`` -> the proxy's base URL."""

    async def start(endpoint_type: str = "identity", **settings: Any) -> str:
        proxy_settings = dataclasses.replace(ProxySettings(), **settings)
        validator = KeystoneTokenValidator(master_url, side_client)
        app = create_proxy_app(
            endpoint_type,
            upstream_url=master_url,
            work_sink=sink,
            token_cache=TokenCache(validator, ttl=proxy_settings.token_cache_ttl),
            settings=proxy_settings,
            http_client=master_client,
            fernet_keys_source=service_fernet_keys(master_url, side_client),
            metrics=metrics,
        )
        urls = await nursery.start(partial(serve_proxy, app, "127.0.0.1", 0))
        return str(urls[0])

    return start
