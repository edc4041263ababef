"""Fixtures of the RPC tests: the real broker, a config per test, the real oslo peer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from dcorch.rpc.config import RpcConfig
from dcorch.settings import RpcSettings
from tests.rpc.peer import URL, OsloPeer, broker_cleanup, open_oslo_peer


@pytest.fixture
def names() -> dict[str, str]:
    """Unique exchange and topic names: parallel runs and tests never share a queue."""
    tag = uuid.uuid4().hex[:10]
    return {
        "exchange": f"test-{tag}-dcorch",
        "dcmanager_exchange": f"test-{tag}-dcmanager",
        "topic": f"test-{tag}-worker",
        "state_topic": f"test-{tag}-state",
        "server": f"host-{tag}",
    }


@pytest.fixture
def rpc_config(names: dict[str, str]) -> RpcConfig:
    """``[rpc]`` of a test: its own names, fast reconnects."""
    return RpcConfig.from_settings(
        RpcSettings(
            transport_url=URL,
            control_exchange=names["exchange"],
            dcmanager_exchange=names["dcmanager_exchange"],
            worker_topic=names["topic"],
            server=names["server"],
            dcmanager_state_topic=names["state_topic"],
            heartbeat=10,
            prefetch=8,
            reconnect_backoff=0.05,
            reconnect_backoff_max=0.5,
            connect_timeout=5,
            confirm_timeout=5,
        )
    )


@pytest.fixture
async def cleanup(names: dict[str, str]) -> AsyncIterator[list[str]]:
    """Queues to delete after the test (the topic's own ones are listed already)."""
    topic, server = names["topic"], names["server"]
    queues = [topic, f"{topic}.{server}", names["state_topic"], f"{names['state_topic']}.peer"]
    yield queues
    await broker_cleanup(
        queues,
        [names["exchange"], names["dcmanager_exchange"], f"{topic}_fanout"],
    )


@pytest.fixture
async def oslo_peer() -> AsyncIterator[OsloPeer]:
    """The real oslo.messaging client and server, in their own process and venv."""
    async with open_oslo_peer() as peer:
        yield peer
