"""Fixtures shared by the integration tests: the whole system through the embedded harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import Settings


def harness_settings(subclouds: int = 0, **sections: dict[str, object]) -> Settings:
    """Settings for an in-process system: private SQLite file, simulated clouds, fast timers."""
    base = Settings().replace(
        sim={"subclouds": subclouds},
        engine={"safety_sweep_interval": 5.0, "offline_retry_interval": 1.0},
        service={"shutdown_timeout": 5.0},
    )
    return base.replace(**sections) if sections else base


@pytest.fixture
async def dc() -> AsyncIterator[Dcorch]:
    """A running system with three managed, online simulated subclouds."""
    async with open_dcorch(harness_settings(subclouds=3), ephemeral_ports=True) as handle:
        await handle.wait_converged(timeout=30)
        yield handle


@pytest.fixture
async def dc_empty() -> AsyncIterator[Dcorch]:
    """A running system whose simulator has no subcloud yet."""
    async with open_dcorch(harness_settings(subclouds=0), ephemeral_ports=True) as handle:
        yield handle
