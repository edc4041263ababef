"""The simulated master's key rotation, as ``keystone-manage fernet_rotate`` rotates a repository.

Staged key 0 becomes the primary under the next id, a new staged key 0 appears, the oldest
secondaries go beyond ``max_active_keys`` (3); the master's keystone then signs with the new
primary, and its sysinv shows the new repository.
"""

from __future__ import annotations

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken

from dcorch.sim import SimCloud
from dcorch.sim.fernet import SimFernetRotator
from dcorch.sim.state import Platform
from tests.sim.conftest import auth


def signing_key(token: str, keys: dict[int, str]) -> int:
    """The id of the one key of ``keys`` that decrypts ``token`` (Fernet: the one that signed)."""
    found = []
    for key_id, key in keys.items():
        try:
            Fernet(key.encode()).decrypt((token + "=" * (-len(token) % 4)).encode())
        except InvalidToken:
            continue
        found.append(key_id)
    assert len(found) == 1, found
    return found[0]


def test_rotation_promotes_the_staged_key_and_drops_the_oldest_secondary() -> None:
    platform = Platform({}, {0: "staged-0", 1: "primary-1"})
    assert platform.rotate_fernet_keys() == [0, 1, 2]
    keys = platform.fernet_keys
    assert keys[2] == "staged-0"  # the staged key is now the primary, under the next id
    assert keys[1] == "primary-1"  # the old primary is a secondary
    staged = keys[0]
    assert staged not in ("staged-0", "primary-1")  # a fresh staged key
    assert platform.rotate_fernet_keys() == [0, 2, 3]  # three keys at most: 1 goes
    assert platform.fernet_keys[3] == staged
    assert platform.fernet_keys[2] == "staged-0"
    assert platform.rotate_fernet_keys(max_active_keys=5) == [0, 2, 3, 4]


def test_rotation_needs_room_for_the_staged_and_the_primary_key() -> None:
    platform = Platform({}, {0: "staged-0", 1: "primary-1"})
    with pytest.raises(ValueError, match="max_active_keys"):
        platform.rotate_fernet_keys(max_active_keys=1)
    assert platform.fernet_keys == {0: "staged-0", 1: "primary-1"}


async def test_the_master_keystone_signs_with_the_new_primary_after_a_rotation(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    ks, sysinv = sim.endpoints.master_keystone, sim.endpoints.master_sysinv
    before = await sim.login(client)
    assert signing_key(before, sim.master.platform.fernet_keys) == 1
    rotator = SimFernetRotator(sim.master)
    await rotator.rotate()

    repo = (await client.get(f"{sysinv}/fernet_repo", headers=auth(sim))).json()
    assert [k["id"] for k in repo] == [0, 1, 2]
    after = await sim.login(client)
    assert signing_key(after, {k["id"]: k["key"] for k in repo}) == 2
    assert sim.master.operations[-1]["op"] == "rotate_fernet_keys"
    # The old primary is a secondary now: its tokens still validate.
    check = {"X-Auth-Token": after, "X-Subject-Token": before}
    assert (await client.get(f"{ks}/auth/tokens", headers=check)).status_code == 200

    await rotator.rotate()  # key 1 is dropped: tokens it signed stop validating
    fresh = await sim.login(client)
    check = {"X-Auth-Token": fresh, "X-Subject-Token": before}
    assert (await client.get(f"{ks}/auth/tokens", headers=check)).status_code == 404
    check = {"X-Auth-Token": fresh, "X-Subject-Token": after}
    assert (await client.get(f"{ks}/auth/tokens", headers=check)).status_code == 200
    assert rotator.rotations == 2
