"""The restart policy of every supervision tree of the process, read from ``[actors]``."""

from __future__ import annotations

from typing import TypedDict

from actors import Backoff, RestartIntensity
from dcorch.settings import ActorSettings


class RestartPolicy(TypedDict):
    """``open_actor_system`` keywords: how often children may restart, and how soon."""

    intensity: RestartIntensity
    backoff: Backoff


def restart_policy(settings: ActorSettings) -> RestartPolicy:
    """The service's, the database's and the sync manager's trees all restart alike."""
    return RestartPolicy(
        intensity=RestartIntensity(
            max_restarts=settings.restart_max, period=settings.restart_period
        ),
        backoff=Backoff(base=settings.restart_backoff, cap=settings.restart_backoff_max),
    )
