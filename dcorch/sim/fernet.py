"""The simulated System Controller's fernet key rotation (what the rotation command does there).

The engine rotates the master's keys every ``engine.fernet_rotation_interval`` through a
``FernetRotator`` (docs/behaviour.md#fernet-rotation). On a real System Controller that is a
command; the harness plugs this one in instead, so the simulated master's repository rotates
as ``keystone-manage fernet_rotate`` rotates a real one, and its keystone signs new tokens with
the new primary key at once.
"""

from __future__ import annotations

import trio

from dcorch.sim.endpoints import SYSINV
from dcorch.sim.state import MAX_ACTIVE_KEYS, CloudState


class SimFernetRotator:
    """Rotates one simulated cloud's key repository (the master's, in the harness)."""

    def __init__(self, cloud: CloudState, *, max_active_keys: int = MAX_ACTIVE_KEYS) -> None:
        self._cloud = cloud
        self._max_active_keys = max_active_keys
        self.rotations = 0

    def __repr__(self) -> str:
        return f"<SimFernetRotator {self._cloud.region} rotations={self.rotations}>"

    async def rotate(self) -> None:
        """Rotate now (in memory: it cannot fail the way a command can)."""
        await trio.lowlevel.checkpoint()
        ids = self._cloud.platform.rotate_fernet_keys(self._max_active_keys)
        self.rotations += 1
        self._cloud.record(SYSINV, "rotate_fernet_keys", ids=ids)
