"""Fixtures: a simulator on a free loopback port and an httpx client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from dcorch.sim import SimCloud, open_sim_cloud


@pytest.fixture
async def sim() -> AsyncIterator[SimCloud]:
    async with open_sim_cloud(subclouds=3, port=0) as cloud:
        yield cloud


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def auth(sim: SimCloud, region: str | None = None) -> dict[str, str]:
    """Headers with an in-process admin token for the master (None) or a subcloud."""
    return {"X-Auth-Token": sim.admin_token(region)}
