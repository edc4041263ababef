"""The proxy, the dispatcher and the database together, through real HTTP against the harness.

The engine is off in most of these tests so that the rows a proxied call wrote can be read
exactly as the dispatcher committed them (the engine would soft-delete completed requests).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from sqlalchemy import Connection, func, select

from dcorch.db.database import DatabaseSeams
from dcorch.db.runner import Execute, Unit
from dcorch.db.schema import orch_job, orch_request, resource, subcloud_sync
from dcorch.db.seeding import seed_eligible_subclouds
from dcorch.db.units_work import enqueue_work
from dcorch.harness import Dcorch, open_dcorch
from tests.conftest import harness_settings

REGIONS = [f"edge{i}" for i in range(1, 6)]


def _work_for(conn: Connection, source_id: str) -> list[dict[str, Any]]:
    """Every job for ``source_id`` with its resource and all its requests (soft-deleted too)."""
    jobs = conn.execute(
        select(orch_job, resource.c.resource_type, resource.c.master_id)
        .join(resource, resource.c.id == orch_job.c.resource_id)
        .where(orch_job.c.source_resource_id == source_id)
        .order_by(orch_job.c.id)
    ).mappings()
    result = []
    for job in jobs:
        requests = conn.execute(
            select(orch_request.c.target_region_name, orch_request.c.state).where(
                orch_request.c.orch_job_id == job["id"]
            )
        ).all()
        result.append(
            {
                "endpoint_type": job["endpoint_type"],
                "resource_type": job["resource_type"],
                "master_id": job["master_id"],
                "operation_type": job["operation_type"],
                "resource_info": json.loads(job["resource_info"] or "null"),
                "targets": sorted(r.target_region_name for r in requests),
                "states": {r.state for r in requests},
            }
        )
    return result


def _job_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(orch_job)).scalar_one())


def _requested_pairs(conn: Connection) -> set[tuple[str, str]]:
    rows = conn.execute(
        select(subcloud_sync.c.subcloud_name, subcloud_sync.c.endpoint_type).where(
            subcloud_sync.c.sync_request == "requested"
        )
    )
    return {(r.subcloud_name, r.endpoint_type) for r in rows}


@pytest.fixture
async def recorder() -> AsyncIterator[Dcorch]:
    """The system without its engine, with five eligible subclouds and one unmanaged."""
    settings = harness_settings(subclouds=0)
    async with open_dcorch(settings, ephemeral_ports=True, engine=False) as dc:
        await dc.db.run(seed_eligible_subclouds, REGIONS)
        await dc.db.add_subcloud("unmanaged1")
        yield dc


async def test_user_create_records_one_job_and_a_request_per_eligible_subcloud(
    recorder: Dcorch,
) -> None:
    dc = recorder
    body = {"user": {"name": "carol", "password": "carol-pw-1", "domain_id": "default"}}
    response = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert response.status_code == 201
    user_id = response.json()["user"]["id"]
    # The 2xx means committed: the rows are readable at once, no waiting.
    [job] = await dc.db.run(_work_for, user_id)
    assert job == {
        "endpoint_type": "identity",
        "resource_type": "users",
        "master_id": user_id,
        "operation_type": "post",
        "resource_info": body,
        "targets": REGIONS,
        "states": {"queued"},
    }
    assert await dc.db.run(_requested_pairs) == {(r, "identity") for r in REGIONS}


async def test_each_identity_route_records_the_spec_mapping(recorder: Dcorch) -> None:
    dc = recorder
    post = dc.client.post
    created = await post(
        dc.identity_url + "/v3/users",
        json={"user": {"name": "dave", "password": "dave-pw-1", "domain_id": "default"}},
        headers=dc.auth,
    )
    user_id = created.json()["user"]["id"]
    group = await post(
        dc.identity_url + "/v3/groups", json={"group": {"name": "ops"}}, headers=dc.auth
    )
    group_id = group.json()["group"]["id"]
    project = await post(
        dc.identity_url + "/v3/projects", json={"project": {"name": "p1"}}, headers=dc.auth
    )
    project_id = project.json()["project"]["id"]
    role = await post(dc.identity_url + "/v3/roles", json={"role": {"name": "r1"}}, headers=dc.auth)
    role_id = role.json()["role"]["id"]
    assert {created.status_code, group.status_code, project.status_code, role.status_code} == {201}

    patch = {"user": {"email": "dave@example.com"}}
    patched = await dc.client.patch(
        f"{dc.identity_url}/v3/users/{user_id}", json=patch, headers=dc.auth
    )
    assert patched.status_code == 200
    member = await dc.client.put(
        f"{dc.identity_url}/v3/groups/{group_id}/users/{user_id}", headers=dc.auth
    )
    assert member.status_code == 204
    grant = await dc.client.put(
        f"{dc.identity_url}/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
        headers=dc.auth,
    )
    assert grant.status_code == 204
    password = await post(
        f"{dc.identity_url}/v3/users/{user_id}/password",
        json={"user": {"password": "dave-pw-2", "original_password": "dave-pw-1"}},
        headers=dc.auth,
    )
    assert password.status_code == 204

    user_jobs = await dc.db.run(_work_for, user_id)
    assert [(j["resource_type"], j["operation_type"]) for j in user_jobs] == [
        ("users", "post"),
        ("users", "patch"),
        ("users", "patch"),  # the password change is stored as a users patch
    ]
    assert user_jobs[1]["resource_info"] == patch
    assert all(j["targets"] == REGIONS for j in user_jobs)
    [group_job] = [j for j in await dc.db.run(_work_for, group_id) if j["operation_type"] == "put"]
    assert group_job["resource_info"] == {"group": {"id": group_id}}
    assignment = f"{project_id}_{user_id}_{role_id}"
    [grant_job] = await dc.db.run(_work_for, assignment)
    # A grant (PUT) is stored as a post of the assignment (docs/behaviour.md#intercepted-routes)
    assert (grant_job["resource_type"], grant_job["operation_type"]) == (
        "project_role_assignments",
        "post",
    )

    deleted = await dc.client.delete(f"{dc.identity_url}/v3/users/{user_id}", headers=dc.auth)
    assert deleted.status_code == 204
    last = (await dc.db.run(_work_for, user_id))[-1]
    assert (last["operation_type"], last["resource_info"]) == ("delete", {})


async def test_non_ok_master_answers_and_bad_tokens_record_nothing(recorder: Dcorch) -> None:
    dc = recorder
    body = {"user": {"name": "erin", "password": "erin-pw-1", "domain_id": "default"}}
    first = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert first.status_code == 201
    jobs = await dc.db.run(_job_count)
    conflict = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert conflict.status_code == 409
    missing = await dc.client.patch(
        dc.identity_url + "/v3/users/" + "0" * 32, json={"user": {}}, headers=dc.auth
    )
    assert missing.status_code == 404
    garbage = await dc.client.post(
        dc.identity_url + "/v3/users",
        content=b"{not json",
        headers={**dc.auth, "Content-Type": "application/json"},
    )
    assert garbage.status_code == 400
    anonymous = await dc.client.post(dc.identity_url + "/v3/users", json=body)
    assert anonymous.status_code == 401
    forged = await dc.client.post(
        dc.identity_url + "/v3/users", json=body, headers={"X-Auth-Token": "forged"}
    )
    assert forged.status_code == 401
    assert await dc.db.run(_job_count) == jobs


async def test_proxy_response_is_the_masters_byte_for_byte(recorder: Dcorch) -> None:
    dc = recorder
    direct = await dc.client.get(dc.master.keystone + "/users", headers=dc.auth)
    proxied = await dc.client.get(dc.identity_url + "/v3/users", headers=dc.auth)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    refused_direct = await dc.client.get(dc.master.keystone + "/users/nobody", headers=dc.auth)
    refused = await dc.client.get(dc.identity_url + "/v3/users/nobody", headers=dc.auth)
    assert refused.status_code == refused_direct.status_code == 404
    assert refused.content == refused_direct.content


async def test_overload_gives_503_with_retry_after_and_every_2xx_is_committed() -> None:
    settings = harness_settings(
        subclouds=0, dispatcher={"mailbox_size": 1, "enqueue_timeout": 0.2, "max_batch": 1}
    )
    gate = trio.Event()

    def gated(execute: Execute) -> Execute:
        async def slow(fn: Unit, args: tuple[Any, ...], write: bool) -> Any:
            if fn is enqueue_work and not gate.is_set():
                await gate.wait()
            return await execute(fn, args, write)

        return slow

    seams = DatabaseSeams(wrap_execute=gated)
    async with open_dcorch(settings, ephemeral_ports=True, engine=False, seams=seams) as dc:
        await dc.db.run(seed_eligible_subclouds, REGIONS)
        statuses: dict[str, int] = {}
        retry_after: set[str] = set()

        async def create(i: int) -> None:
            body = {"user": {"name": f"u{i}", "password": "pw-123456", "domain_id": "default"}}
            response = await dc.client.post(
                dc.identity_url + "/v3/users", json=body, headers=dc.auth
            )
            statuses[f"u{i}"] = response.status_code
            if response.status_code == 503:
                retry_after.add(response.headers["Retry-After"])
                assert "error_message" in response.json()

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(create, i)
            with trio.fail_after(20):
                while sum(1 for s in statuses.values() if s == 503) < 10:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            gate.set()
        assert sorted(statuses.values()).count(503) == 10
        assert retry_after == {"1"}
        committed = await dc.db.run(_job_count)
        assert committed == sum(1 for s in statuses.values() if s == 201) == 2
        after = await dc.client.post(
            dc.identity_url + "/v3/users",
            json={"user": {"name": "later", "password": "pw-123456", "domain_id": "default"}},
            headers=dc.auth,
        )
        assert after.status_code == 201


@pytest.mark.slow
async def test_200_concurrent_commands_at_1000_subclouds_all_committed() -> None:
    regions = [f"sc{i}" for i in range(1000)]
    async with open_dcorch(harness_settings(subclouds=0), ephemeral_ports=True, engine=False) as dc:
        await dc.db.run(seed_eligible_subclouds, regions)
        ids: list[str] = []

        async def create(i: int) -> None:
            body = {"user": {"name": f"bulk{i}", "password": "pw-123456", "domain_id": "default"}}
            response = await dc.client.post(
                dc.identity_url + "/v3/users", json=body, headers=dc.auth
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["user"]["id"])

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(create, i)
        assert len(ids) == 200

        def counts(conn: Connection) -> tuple[int, int]:
            jobs = conn.execute(select(func.count()).select_from(orch_job)).scalar_one()
            requests = conn.execute(select(func.count()).select_from(orch_request)).scalar_one()
            return int(jobs), int(requests)

        assert await dc.db.run(counts) == (200, 200 * 1000)
        # Group commit: far fewer transactions than commands.
        assert dc.db.dispatcher.stats.order_batches < 200
        assert dc.db.dispatcher.stats.submissions == 200


async def test_token_revoked_through_the_identity_proxy_is_refused_at_once_everywhere(
    recorder: Dcorch,
) -> None:
    # The default cache ttl (30 s): a refusal now can only come from the revocation dropping
    # the token from the one cache that the proxies and the v1 API share.
    dc = recorder
    assert dc.settings.proxy.token_cache_ttl == 30.0
    master = dc.settings.master
    login = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": master.username,
                        "domain": {"id": "default"},
                        "password": master.password,
                    }
                },
            },
            "scope": {"project": {"name": master.project_name, "domain": {"id": "default"}}},
        }
    }
    issued = await dc.client.post(dc.master.keystone + "/auth/tokens", json=login)
    assert issued.status_code == 201, issued.text
    second = {"X-Auth-Token": issued.headers["X-Subject-Token"]}
    users = dc.identity_url + "/v3/users"
    iusers = dc.platform_url + "/v1/iuser"
    subclouds = dc.api_url + "/v1.0/admin/subclouds"
    for url in (users, iusers, subclouds):
        assert (await dc.client.get(url, headers=second)).status_code == 200, url

    revoked = await dc.client.delete(
        dc.identity_url + "/v3/auth/tokens",
        headers={**dc.auth, "X-Subject-Token": second["X-Auth-Token"]},
    )
    assert revoked.status_code == 204, revoked.text

    assert dc.sim is not None
    served = dict(dc.sim.master.counters or {})
    for url in (users, iusers, subclouds):
        assert (await dc.client.get(url, headers=second)).status_code == 401, url
    # The proxies refused the token themselves: the master (which would also say 401) never
    # saw the requests.
    after = dc.sim.master.counters or {}
    for route in ("GET keystone users", "GET sysinv iuser"):
        assert after.get(route) == served.get(route), route
    assert (await dc.client.get(users, headers=dc.auth)).status_code == 200


async def test_proxied_commands_are_counted_by_endpoint_type_and_outcome(
    recorder: Dcorch,
) -> None:
    dc = recorder
    body = {"user": {"name": "metered", "password": "metered-pw-1", "domain_id": "default"}}
    created = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert created.status_code == 201
    conflict = await dc.client.post(dc.identity_url + "/v3/users", json=body, headers=dc.auth)
    assert conflict.status_code == 409
    listed = await dc.client.get(dc.identity_url + "/v3/users", headers=dc.auth)
    assert listed.status_code == 200  # passed through: not a command, not counted

    scraped = await dc.client.get(dc.api_url + "/metrics")
    assert scraped.status_code == 200
    series = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("dcorch_proxied_commands_total{")
    ]
    assert series == [
        'dcorch_proxied_commands_total{endpoint_type="identity",outcome="committed"} 1.0',
        'dcorch_proxied_commands_total{endpoint_type="identity",outcome="rejected"} 1.0',
    ]
