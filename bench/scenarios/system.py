"""Starting the whole system (``open_dcorch``) on a bench backend, pre-seeded at scale.

Subclouds are seeded with dcorch's bulk seeding unit in the state a completed initial sync leaves
them (managed, online, completed) before the system starts. The simulated subclouds start equal
to the master, so this is the steady state of a synced system after a restart; registering N
subclouds one API call at a time would measure the registration loop instead of dcorch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, text

from bench.backends import Backend
from dcorch.db import open_database
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import Settings


def bench_settings(backend: Backend, subclouds: int, **sections: dict[str, Any]) -> Settings:
    """Quiet, fast-timer settings on the bench backend with ``subclouds`` simulated subclouds."""
    base = Settings().replace(
        database={"url": backend.url},
        sim={"subclouds": subclouds},
        service={"shutdown_timeout": 5.0, "log_level": "WARNING"},
        engine={"offline_retry_interval": 1.0},
    )
    return base.replace(**sections) if sections else base


def _seed(conn: Connection, regions: list[str], analyze: bool) -> int:
    count = seed_eligible_subclouds(conn, regions)
    if analyze:
        conn.execute(text("ANALYZE"))
    return count


async def seed_regions(backend: Backend, regions: list[str]) -> None:
    """Seed eligible subclouds (and ``ANALYZE`` PostgreSQL) before start-up.

    Why ``ANALYZE``: docs/database.md#pitfalls.
    """
    async with open_database(backend.url) as db:
        await db.run(_seed, regions, backend.name == "postgresql")


@asynccontextmanager
async def seeded_system(
    backend: Backend, subclouds: int, *, engine: bool = True, **sections: dict[str, Any]
) -> AsyncIterator[Dcorch]:
    """``open_dcorch`` with ``subclouds`` seeded, synced subclouds (engine optional).

    With the engine, the harness registers the simulated subclouds as synced and freshly
    audited (``presynced``), the steady state after a restart; without it the rows are seeded
    here and no simulated subcloud is needed (the write path alone is measured).
    """
    logging.getLogger().setLevel(logging.WARNING)
    if not engine:
        await seed_regions(backend, [f"subcloud{i}" for i in range(1, subclouds + 1)])
    settings = bench_settings(backend, subclouds if engine else 0, **sections)
    async with open_dcorch(settings, ephemeral_ports=True, engine=engine, presynced=engine) as dc:
        yield dc


def user_body(tag: str) -> dict[str, Any]:
    """A keystone user-create body with a unique name."""
    name = f"bench-{tag}-{uuid.uuid4().hex[:10]}"
    return {"user": {"name": name, "password": "bench-pw-1", "domain_id": "default"}}
