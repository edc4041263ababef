"""The periodic purge runs inside the service: finished work disappears once old enough."""

from __future__ import annotations

import trio
from sqlalchemy import Connection, func, select

from dcorch.db.schema import orch_job, orch_request
from dcorch.harness import open_dcorch
from tests.conftest import harness_settings


def _rows(conn: Connection) -> tuple[int, int]:
    """(orch_request rows, orch_job rows), soft-deleted ones included."""
    requests = conn.execute(select(func.count()).select_from(orch_request)).scalar_one()
    jobs = conn.execute(select(func.count()).select_from(orch_job)).scalar_one()
    return int(requests), int(jobs)


async def test_purge_removes_finished_work_at_its_interval() -> None:
    settings = harness_settings(subclouds=2, database={"purge_age_days": 0, "purge_interval": 0.5})
    async with open_dcorch(settings, ephemeral_ports=True) as dc:
        await dc.wait_converged(timeout=30)
        body = {"user": {"name": "purged", "password": "pw-123456", "domain_id": "default"}}
        reply = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
        assert reply.status_code == 201
        await dc.wait_converged(timeout=30)
        with trio.fail_after(20):
            while await dc.db.count_requests_by_state():  # noqa: ASYNC110 - foreign state
                await trio.sleep(0.05)
        # Applied requests are soft-deleted; the purge then removes them and their job.
        with trio.fail_after(10):
            while await dc.db.run_readonly(_rows) != (0, 0):  # noqa: ASYNC110
                await trio.sleep(0.1)
