"""The engine end to end: simulator + database + dispatcher + sync manager in one process."""

from __future__ import annotations

import json

import trio

from dcorch import constants as c
from dcorch.work import WorkOrder

from .conftest import Engine


def user_order(user_id: str, op: str = c.OPERATION_POST, info: object = None) -> WorkOrder:
    return WorkOrder(
        endpoint_type=c.ENDPOINT_TYPE_IDENTITY,
        resource_type=c.RESOURCE_USERS,
        source_resource_id=user_id,
        operation_type=op,
        resource_info=json.dumps(info or {}),
    )


async def create_master_user(engine: Engine, name: str) -> str:
    body = {"user": {"name": name, "password": "pw-" + name, "domain_id": "default"}}
    response = await engine.master_call("POST", "users", json=body)
    return str(response.json()["user"]["id"])


async def test_work_order_reaches_every_eligible_subcloud(start_engine) -> None:
    engine: Engine = await start_engine()
    regions = engine.sim.regions
    await engine.manage(*regions)
    with trio.fail_after(20):
        await engine.wait_enabled(*regions)
    uid = await create_master_user(engine, "alice")
    [result] = await engine.dispatcher.submit([user_order(uid)])
    assert sorted(result.target_regions) == sorted(regions)
    with trio.fail_after(20):
        await engine.sim.wait_converged(regions, timeout=20)
    for region in regions:
        assert uid in engine.sim.subcloud(region).identity.users
