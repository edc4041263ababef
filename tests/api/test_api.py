"""The dcorch v1 API through real HTTP against the embedded harness."""

from __future__ import annotations

from typing import Any

import pytest

from dcorch import constants
from dcorch.harness import Dcorch


def _url(dc: Dcorch, path: str = "") -> str:
    return f"{dc.api_url}/v1.0/admin/subclouds{path}"


async def _snapshot(dc: Dcorch) -> tuple[Any, ...]:
    """Everything a rejected request must leave unchanged."""
    subclouds = await dc.db.list_subclouds()
    syncs = await dc.db.list_subcloud_syncs()
    return (subclouds, syncs, await dc.db.count_requests_by_state())


async def test_root_is_public_and_versioned(dc_empty: Dcorch) -> None:
    response = await dc_empty.client.get(dc_empty.api_url + "/")
    assert response.status_code == 200
    versions = response.json()["versions"]
    assert len(versions) == 1
    assert versions[0]["id"] == "v1.0"
    assert versions[0]["status"] == "CURRENT"
    assert response.headers["x-openstack-request-id"].startswith("req-")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        refused = await dc_empty.client.request(method, dc_empty.api_url + "/")
        assert refused.status_code == 405, method


async def test_token_required(dc_empty: Dcorch) -> None:
    missing = await dc_empty.client.get(_url(dc_empty))
    assert missing.status_code == 401
    assert missing.json() == {"error": "unauthorized", "detail": "missing authentication token"}
    bad = await dc_empty.client.get(_url(dc_empty), headers={"X-Auth-Token": "gAAAAAnotatoken"})
    assert bad.status_code == 401
    before = await _snapshot(dc_empty)
    refused = await dc_empty.client.post(_url(dc_empty), json={"subcloud": "subcloud9"})
    assert refused.status_code == 401
    assert await _snapshot(dc_empty) == before


async def test_add_manage_converge_delete(dc_empty: Dcorch) -> None:
    dc = dc_empty
    assert dc.sim is not None
    [region] = dc.sim.add_subclouds(1)
    added = await dc.client.post(
        _url(dc), json={"subcloud": region, "management_ip": "10.0.0.5"}, headers=dc.auth
    )
    assert added.status_code == 200
    assert added.json() == {"added": {"subcloud": region}}
    row = await dc.db.get_subcloud(region)
    assert row.management_ip == "10.0.0.5"
    assert row.initial_sync_state == constants.INITIAL_SYNC_NONE

    duplicate = await dc.client.post(_url(dc), json={"subcloud": region}, headers=dc.auth)
    assert duplicate.status_code == 409
    assert region in duplicate.json()["detail"]

    managed = await dc.client.put(
        _url(dc, f"/{region}"),
        json={"management_state": "managed", "availability_status": "online"},
        headers=dc.auth,
    )
    assert managed.status_code == 200
    assert managed.json()["subcloud"]["management_state"] == "managed"
    await dc.wait_converged([region], timeout=30)
    assert (await dc.db.get_subcloud(region)).initial_sync_state == "completed"

    initial = await dc.client.get(_url(dc, f"/{region}/initial-sync"), headers=dc.auth)
    assert initial.json() == {
        "subcloud": region,
        "initial_sync_state": "completed",
        "last_error": None,
    }
    status = await dc.client.get(_url(dc, f"/{region}/sync-status"), headers=dc.auth)
    assert set(status.json()["endpoints"]) == set(constants.SYNC_ENDPOINT_TYPES)

    listing = await dc.client.get(_url(dc), headers=dc.auth)
    [view] = listing.json()["subclouds"]
    assert view["region_name"] == region
    assert set(view["sync_status"]) == set(constants.SYNC_ENDPOINT_TYPES)

    deleted = await dc.client.delete(_url(dc, f"/{region}"), headers=dc.auth)
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": {"subcloud": region}}
    again = await dc.client.delete(_url(dc, f"/{region}"), headers=dc.auth)
    assert again.status_code == 404
    assert await dc.db.list_subclouds() == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "body required"),
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"management_ip": "10.0.0.1"}', "subcloud required"),
        (b'{"subcloud": 5}', "subcloud must be a str, got int"),
        (b'{"subcloud": "sc1", "colour": "red"}', "unknown field(s): colour"),
        (b'{"subcloud": "bad name/x"}', "invalid subcloud region name"),
        (b'{"subcloud": "sc1", "management_ip": "300.1.1.1"}', "management_ip must be an IP"),
        (b'__import__("os").system("true")', "body is not valid JSON"),
    ],
)
async def test_bad_add_bodies_are_rejected_and_change_nothing(
    dc_empty: Dcorch, body: bytes, detail: str
) -> None:
    before = await _snapshot(dc_empty)
    response = await dc_empty.client.post(
        _url(dc_empty),
        content=body,
        headers={**dc_empty.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert detail in response.json()["detail"]
    assert await _snapshot(dc_empty) == before


async def test_bad_updates_are_rejected_and_change_nothing(dc_empty: Dcorch) -> None:
    dc = dc_empty
    await dc.client.post(_url(dc), json={"subcloud": "lonely"}, headers=dc.auth)
    before = await _snapshot(dc)
    cases = [
        ("/lonely", {"management_state": "sort-of"}, 400, "management_state must be one of"),
        ("/lonely", {"availability_status": True}, 400, "availability_status must be a str"),
        ("/lonely", {}, 400, "nothing to update"),
        ("/lonely", {"management_ip": "x"}, 400, "management_ip must be an IP"),
        ("/lonely", {"state": "managed"}, 400, "unknown field(s): state"),
        ("/nobody", {"management_state": "managed"}, 404, "subcloud 'nobody' not found"),
    ]
    for path, body, status, detail in cases:
        response = await dc.client.put(_url(dc, path), json=body, headers=dc.auth)
        assert response.status_code == status, (body, response.text)
        assert detail in response.json()["detail"]
    assert await _snapshot(dc) == before
    initial = await dc.client.put(
        _url(dc, "/lonely/initial-sync"), json={"initial_sync_state": "requested"}, headers=dc.auth
    )
    assert initial.status_code == 409
    assert "not managed and online" in initial.json()["detail"]
    unknown_state = await dc.client.get(
        _url(dc, "/lonely/orch-requests?state=sleeping"), headers=dc.auth
    )
    assert unknown_state.status_code == 400
    assert unknown_state.json()["detail"] == "unknown state(s): sleeping"
    assert await _snapshot(dc) == before


async def test_orch_requests_listing_hides_resource_info(dc: Dcorch) -> None:
    region = "subcloud1"
    assert dc.sim is not None
    dc.sim.set_faults(region, offline=True)
    created = await dc.client.post(
        dc.identity_url + "/v3/users",
        json={"user": {"name": "held", "password": "held-secret-pw", "domain_id": "default"}},
        headers=dc.auth,
    )
    assert created.status_code == 201
    response = await dc.client.get(_url(dc, f"/{region}/orch-requests"), headers=dc.auth)
    assert response.status_code == 200
    items = response.json()["orch_requests"]
    assert [(i["resource_type"], i["operation_type"]) for i in items] == [("users", "post")]
    assert "held-secret-pw" not in response.text
    dc.sim.clear_faults(region)


async def test_health_and_metrics(dc: Dcorch) -> None:
    health = await dc.client.get(dc.api_url + "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    created = await dc.client.post(
        dc.identity_url + "/v3/users",
        json={"user": {"name": "metered", "password": "pw-123456", "domain_id": "default"}},
        headers=dc.auth,
    )
    assert created.status_code == 201
    metrics = await dc.client.get(dc.api_url + "/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert "dcorch_enqueue_latency_seconds_count 1" in text
    assert "# TYPE dcorch_orch_requests gauge" in text
    assert 'dcorch_mailbox_depth{mailbox="dispatcher"} 0.0' in text
    assert 'dcorch_actor_restarts{tree="dcorch"} 0.0' in text
    assert 'dcorch_actor_restarts{tree="sync"}' in text
