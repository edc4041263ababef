"""The periodic purge: soft-deleted rows are removed once they are old enough.

Completed and cleaned-up ``orch_request`` rows are only soft-deleted (so an operator can still
see recent history); without this task they would grow forever. A purge also removes jobs with
no request left and resources nothing refers to (:func:`dcorch.db.units_requests.purge_deleted`).
"""

from __future__ import annotations

import logging

import trio

from dcorch.db.database import Database

logger = logging.getLogger(__name__)


async def purge_periodically(
    db: Database,
    *,
    age_days: float,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Purge rows soft-deleted more than ``age_days`` ago, now and every ``interval`` seconds.

    A failure is only logged: nothing depends on it, and an outage must not cause a restart loop.
    """
    task_status.started()
    while True:
        try:
            counts = await db.purge_deleted(age_days)
        except Exception as exc:
            logger.warning("purge.failed error=%s", exc)
        else:
            if counts.orch_requests or counts.orch_jobs or counts.resources:
                logger.info(
                    "purge.done orch_requests=%d orch_jobs=%d resources=%d",
                    counts.orch_requests,
                    counts.orch_jobs,
                    counts.resources,
                )
        await trio.sleep(interval)
