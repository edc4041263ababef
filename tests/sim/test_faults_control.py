"""Fault injection, the control API, convergence and scale."""

from __future__ import annotations

import time

import httpx
import pytest
import trio

from dcorch.sim import Faults, NotConverged, SimCloud, open_sim_cloud
from tests.sim.conftest import auth


async def _get_users(sim: SimCloud, client: httpx.AsyncClient, region: str) -> httpx.Response:
    return await client.get(
        f"{sim.endpoints.subcloud_keystone(region)}/users", headers=auth(sim, region)
    )


async def test_latency_on_mock_clock(
    sim: SimCloud, client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_faults("subcloud1", latency_ms=250)
    t0 = trio.current_time()
    assert (await _get_users(sim, client, "subcloud1")).status_code == 200
    assert trio.current_time() - t0 == pytest.approx(0.25)
    t0 = trio.current_time()
    assert (await _get_users(sim, client, "subcloud2")).status_code == 200
    assert trio.current_time() - t0 == pytest.approx(0.0)


async def test_error_rate_is_seeded(sim: SimCloud, client: httpx.AsyncClient) -> None:
    async def statuses() -> list[int]:
        sim.set_faults("subcloud1", error_rate=0.5, error_status=500, seed=7)
        return [(await _get_users(sim, client, "subcloud1")).status_code for _ in range(20)]

    first = await statuses()
    assert set(first) == {200, 500}
    assert await statuses() == first
    sim.set_faults("subcloud1", error_rate=1.0, error_status=503)
    r = await _get_users(sim, client, "subcloud1")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == 503
    counters = sim.subcloud("subcloud1").counters
    assert counters is not None
    assert counters["GET keystone <injected error>"] >= 1


async def test_offline_is_a_transport_error(sim: SimCloud, client: httpx.AsyncClient) -> None:
    sim.set_faults("subcloud2", offline=True)
    with pytest.raises(httpx.TransportError):
        await _get_users(sim, client, "subcloud2")
    assert (await _get_users(sim, client, "subcloud1")).status_code == 200
    sim.clear_faults("subcloud2")
    assert (await _get_users(sim, client, "subcloud2")).status_code == 200


async def test_timeout_hangs_until_the_client_gives_up(
    sim: SimCloud, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_faults("subcloud3", timeout=True)
    async with httpx.AsyncClient(timeout=7) as client:
        t0 = trio.current_time()
        with pytest.raises(httpx.TimeoutException):
            await _get_users(sim, client, "subcloud3")
        assert trio.current_time() - t0 == pytest.approx(7)
        sim.clear_faults("subcloud3")
        assert (await _get_users(sim, client, "subcloud3")).status_code == 200


async def test_flapping_follows_the_clock(
    sim: SimCloud, client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_faults("subcloud1", flap_offline_s=10, flap_online_s=20)

    async def online() -> bool:
        try:
            return (await _get_users(sim, client, "subcloud1")).status_code == 200
        except httpx.TransportError:
            return False

    seen = []
    for _ in range(4):
        seen.append(await online())
        await trio.sleep(10)
    assert seen == [False, True, True, False]


async def test_fault_control_api(sim: SimCloud, client: httpx.AsyncClient) -> None:
    url = f"{sim.endpoints.control}/subclouds/subcloud1/faults"
    r = await client.put(url, json={"latency_ms": 5, "error_rate": 0.25, "error_status": 500})
    assert r.status_code == 200
    assert r.json()["error_rate"] == 0.25
    assert sim.subcloud("subcloud1").faults is not None
    assert (await client.get(url)).json()["latency_ms"] == 5
    assert (await client.put(url, json={"error_rate": 2})).status_code == 400
    assert (await client.put(url, json={"nonsense": 1})).status_code == 400
    assert (await client.put(url, json={"offline": "yes"})).status_code == 400
    assert (await client.delete(url)).json() == Faults().as_json()
    assert sim.subcloud("subcloud1").faults is None
    assert (
        await client.put(f"{sim.endpoints.control}/subclouds/nope/faults", json={})
    ).status_code == 404
    with pytest.raises(ValueError, match=r"^error_rate must be <= 1, got 3$"):
        sim.set_faults("subcloud1", error_rate=3)


async def test_master_service_faults_hit_only_that_service(
    sim: SimCloud, client: httpx.AsyncClient
) -> None:
    """The master's DB-sync down while its keystone answers: a master outage a test can make."""
    url = f"{sim.endpoints.control}/master/faults/dcdbsync"
    users = f"{sim.endpoints.master_dcdbsync}/identity/users/"
    r = await client.put(url, json={"offline": True})
    assert r.status_code == 200
    assert r.json()["offline"] is True
    with pytest.raises(httpx.TransportError):
        await client.get(users, headers=auth(sim))
    keystone = await client.get(f"{sim.endpoints.master_keystone}/users", headers=auth(sim))
    assert keystone.status_code == 200
    assert (await _get_users(sim, client, "subcloud1")).status_code == 200
    assert (await client.get(url)).json()["offline"] is True
    assert (await client.delete(url)).json() == Faults().as_json()
    assert (await client.get(users, headers=auth(sim))).status_code == 200

    sim.set_master_faults("sysinv", error_rate=1.0, error_status=503)
    r = await client.get(f"{sim.endpoints.master_sysinv}/iuser", headers=auth(sim))
    assert r.status_code == 503
    sim.clear_master_faults()
    assert sim.state.master_faults == {}
    r = await client.get(f"{sim.endpoints.master_sysinv}/iuser", headers=auth(sim))
    assert r.status_code == 200

    nowhere = f"{sim.endpoints.control}/master/faults/nova"
    assert (await client.put(nowhere, json={"offline": True})).status_code == 404
    assert (await client.put(url, json={"offline": "yes"})).status_code == 400
    with pytest.raises(ValueError, match="unknown master service 'nova'"):
        sim.set_master_faults("nova", offline=True)


async def test_inspection_and_subcloud_lifecycle(sim: SimCloud, client: httpx.AsyncClient) -> None:
    ctl = sim.endpoints.control
    r = await client.post(f"{ctl}/subclouds", json={"count": 2, "regions": ["edge-a"]})
    assert r.status_code == 201
    assert r.json()["added"] == ["subcloud4", "subcloud5", "edge-a"]
    assert (await client.get(f"{ctl}/subclouds")).json()["count"] == 6
    await _get_users(sim, client, "edge-a")
    state = (await client.get(f"{ctl}/subclouds/edge-a/state")).json()
    assert {u["local_user"]["name"] for u in state["users"]} >= {"admin"}
    assert state["counters"] == {"GET keystone users": 1}
    assert len(state["fernet_keys"]) == 2
    assert state["iuser"]["passwd_hash"]
    master = (await client.get(f"{ctl}/master/state")).json()
    assert {p["project"]["name"] for p in master["projects"]} == {"admin", "services"}
    assert (await client.delete(f"{ctl}/subclouds/edge-a")).status_code == 204
    assert (await _get_users(sim, client, "subcloud1")).status_code == 200
    r = await client.get(f"{sim.endpoints.subcloud_keystone('edge-a')}/users")
    assert r.status_code == 404
    assert (await client.delete(f"{ctl}/subclouds/edge-a")).status_code == 404
    assert (await client.post(f"{ctl}/subclouds", json={"count": -1})).status_code == 400
    assert (await client.get(f"{sim.base_url}/elsewhere")).status_code == 404
    assert (
        await client.get(f"{sim.endpoints.subcloud_root('subcloud1')}/dcmanager/v1.0/x")
    ).status_code == 404
    sim.remove_subcloud("subcloud5")
    assert sim.add_subclouds(1) == ["subcloud6"]
    assert sim.dump("subcloud6")["region"] == "subcloud6"


async def test_convergence_via_dcdbsync(
    sim: SimCloud, client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    ks, mdb, h = sim.endpoints.master_keystone, sim.endpoints.master_dcdbsync, auth(sim)
    uid = (
        await client.post(
            f"{ks}/users", headers=h, json={"user": {"name": "erin", "password": "pw"}}
        )
    ).json()["user"]["id"]
    # an excluded service user changing on the master is not a difference
    fm = sim.master.identity.find_name("user", "default", "fm")
    assert fm is not None
    await client.patch(
        f"{ks}/users/{fm['user']['id']}", headers=h, json={"user": {"description": "ignored"}}
    )
    diff = sim.differences(["subcloud1"])["subcloud1"]
    assert "users: missing " + uid + " (erin)" in diff
    assert any(d.startswith("fernet_repo: differs keys") for d in diff)
    assert not any("fm" in d for d in diff)
    with pytest.raises(NotConverged, match="subcloud1"):
        await sim.wait_converged(["subcloud1"], timeout=1)
    assert trio.current_time() >= 1

    sdb, sh = sim.endpoints.subcloud_dcdbsync("subcloud1"), auth(sim, "subcloud1")
    record = (await client.get(f"{mdb}/identity/users/{uid}", headers=h)).json()
    assert (await client.post(f"{sdb}/identity/users/", headers=sh, json=record)).status_code == 201
    keys = (await client.get(f"{sim.endpoints.master_sysinv}/fernet_repo", headers=h)).json()
    await client.put(
        f"{sim.endpoints.subcloud_sysinv('subcloud1')}/fernet_repo", headers=sh, json=keys
    )
    await sim.wait_converged(["subcloud1"], timeout=1)
    r = await client.get(f"{sim.endpoints.control}/subclouds/subcloud1/convergence")
    assert r.json() == {"converged": True, "differences": []}
    r = await client.get(
        f"{sim.endpoints.control}/subclouds/subcloud2/convergence", params={"ignore": "fernet_repo"}
    )
    assert r.json()["differences"] == [f"users: missing {uid} (erin)"]

    # a subcloud-side change is reported as a difference
    await client.patch(
        f"{sim.endpoints.subcloud_keystone('subcloud1')}/users/{uid}",
        headers=auth(sim, "subcloud1"),
        json={"user": {"enabled": False}},
    )
    # (disabling also revoked erin's tokens on the subcloud only: that subcloud's own event,
    # which dcorch leaves alone, so it is no difference)
    assert len(sim.subcloud("subcloud1").identity.revocations) == 1
    diff = sim.differences(["subcloud1"])["subcloud1"]
    assert diff == [f"users: differs {uid} (erin): enabled"]
    assert sim.differences(["subcloud2"], ignore=["users", "fernet_repo"]) == {}


async def test_distinct_default_ids_differ_until_replaced() -> None:
    async with open_sim_cloud(subclouds=1, distinct_default_ids=True) as sim:
        diff = sim.differences(ignore=["fernet_repo"])["subcloud1"]
        assert any(d.startswith("users: missing") for d in diff)
        admin = sim.subcloud("subcloud1").identity.find_name("user", "default", "admin")
        assert admin is not None
        master_admin = sim.master.identity.find_name("user", "default", "admin")
        assert master_admin is not None
        assert admin["user"]["id"] != master_admin["user"]["id"]


async def test_ten_thousand_subclouds_start_quickly(client: httpx.AsyncClient) -> None:
    t0 = time.perf_counter()
    async with open_sim_cloud(subclouds=10_000) as sim:
        started = time.perf_counter() - t0
        assert len(sim.regions) == 10_000
        assert started < 5
        r = await _get_users(sim, client, "subcloud9999")
        assert r.status_code == 200
        assert {u["name"] for u in r.json()["users"]} >= {"admin"}
        assert sim.subcloud("subcloud10000").identity_is_pristine
        t0 = time.perf_counter()
        diff = sim.differences(ignore=["fernet_repo"])
        assert diff == {}
        assert time.perf_counter() - t0 < 10
