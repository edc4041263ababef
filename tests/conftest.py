"""Fixtures shared by the integration tests: the whole system through the embedded harness."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import Settings

SKIP_KEYSTONE = "DCORCH_SKIP_KEYSTONE"


def _skipping_keystone() -> bool:
    """DCORCH_SKIP_KEYSTONE=1 (for machines without registry access) skips the keystone tests."""
    return os.environ.get(SKIP_KEYSTONE, "") not in ("", "0")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the real Keystone venv and database template before the first keystone test runs.

    A cold build takes minutes, far over one test's timeout, so it happens here once, outside
    any test. A failure is remembered by tests.realkeystone.keystone and raised by every
    keystone test's fixtures: loud, never a silent skip.
    """
    if _skipping_keystone() or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("keystone") for item in session.items):
        return
    from tests.realkeystone.keystone import KeystoneUnavailableError, bootstrapped_db_template

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("realkeystone: preparing the Keystone venv (first run: minutes)")
    try:
        bootstrapped_db_template()
    except KeystoneUnavailableError as exc:
        if reporter is not None:
            reporter.write_line(f"realkeystone: UNAVAILABLE, keystone tests will error: {exc}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip keystone-marked tests, with the reason, only when DCORCH_SKIP_KEYSTONE asks for it."""
    if item.get_closest_marker("keystone") and _skipping_keystone():
        pytest.skip(f"{SKIP_KEYSTONE}=1: real Keystone peers not installed")


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
