"""``Dcorch.wait_converged`` waits for dcorch to be done, not only for equal-looking subclouds.

A pristine simulated subcloud already equals a pristine master, so comparing clouds alone
returned before initial syncs had finished and before queued work was applied. The wait reads
the database too (docs/behaviour.md#harness-convergence).
"""

from __future__ import annotations

import pytest

from dcorch import constants
from dcorch.harness import open_dcorch, register_subclouds
from dcorch.sim import NotConverged
from tests.conftest import harness_settings

USER = {"user": {"name": "late", "password": "late-pw-1", "domain_id": "default"}}


async def test_wait_names_a_subcloud_whose_initial_sync_is_not_done() -> None:
    settings = harness_settings(subclouds=3, engine={"initial_sync_retry": 0.5})
    async with open_dcorch(settings, ephemeral_ports=True, register=False) as dc:
        assert dc.sim is not None
        # subcloud2 already holds the master's keys: comparing clouds alone finds it done.
        dc.sim.subcloud("subcloud2").platform.set_fernet_keys(dc.sim.master.platform.fernet_keys)
        dc.sim.set_faults("subcloud2", offline=True)
        assert "subcloud2" not in dc.sim.differences()
        await register_subclouds(dc, dc.sim.regions)
        with pytest.raises(NotConverged) as raised:
            await dc.wait_converged(timeout=3)
        [(region, reasons)] = raised.value.differences.items()
        assert region == "subcloud2"
        assert reasons[0].startswith("initial_sync_state ")
        assert "subcloud2: initial_sync_state" in str(raised.value)
        await dc.wait_converged(["subcloud1", "subcloud3"], timeout=1)

        dc.sim.clear_faults("subcloud2")
        await dc.wait_converged(timeout=30)
        backlogs = await dc.db.subcloud_backlogs()
        assert [(b.initial_sync_state, b.work) for b in backlogs] == [("completed", 0)] * 3


async def test_wait_names_queued_work_and_differences_then_catches_up() -> None:
    async with open_dcorch(harness_settings(subclouds=2), ephemeral_ports=True) as dc:
        assert dc.sim is not None
        await dc.wait_converged(timeout=30)
        dc.sim.set_faults("subcloud2", offline=True)
        reply = await dc.client.post(dc.identity_url + "/v3/users", json=USER, headers=dc.auth)
        assert reply.status_code == 201
        uid = reply.json()["user"]["id"]
        assert await dc.db.request_regions("users", uid) == ["subcloud1", "subcloud2"]
        await dc.wait_converged(["subcloud1"], timeout=30)
        with pytest.raises(NotConverged) as raised:
            await dc.wait_converged(timeout=2)
        assert list(raised.value.differences) == ["subcloud2"]
        assert raised.value.differences["subcloud2"][:3] == [
            "1 requests queued or in progress",
            "differs from the master in users",
            f"users: missing {uid} (late)",
        ]
        dc.sim.clear_faults("subcloud2")
        await dc.wait_converged(timeout=30)
        assert uid in dc.sim.subcloud("subcloud2").identity.users


async def test_unmanaged_subclouds_are_not_waited_for_unless_listed() -> None:
    async with open_dcorch(harness_settings(subclouds=2), ephemeral_ports=True) as dc:
        await dc.wait_converged(timeout=30)
        await dc.db.update_subcloud_states(
            "subcloud2", management_state=constants.MANAGEMENT_UNMANAGED
        )
        await dc.wait_converged(timeout=5)
        with pytest.raises(NotConverged) as raised:
            await dc.wait_converged(["subcloud2", "nowhere"], timeout=0)
        assert raised.value.differences == {
            "subcloud2": ["management_state unmanaged", "initial_sync_state none"],
            "nowhere": ["not registered in dcorch", "not a simulated subcloud"],
        }
