"""The v1 API's per-subcloud service URLs and endpoint types, through real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from dcorch import constants
from dcorch.harness import Dcorch


def _url(dc: Dcorch, path: str = "") -> str:
    return f"{dc.api_url}/v1.0/admin/subclouds{path}"


async def _snapshot(dc: Dcorch) -> tuple[Any, ...]:
    return (await dc.db.list_subclouds(), await dc.db.list_subcloud_syncs())


URLS = {
    "keystone": "https://10.0.0.7:5001/v3",
    "sysinv": "http://sc7.example:6386",
    "dcdbsync": "https://[fd00::7]:8220/v1.0/",
}


async def test_add_keeps_given_urls_and_endpoint_types_and_shows_them(dc_empty: Dcorch) -> None:
    dc = dc_empty
    added = await dc.client.post(
        _url(dc),
        json={"subcloud": "sc7", "endpoints": URLS, "endpoint_types": ["identity"]},
        headers=dc.auth,
    )
    assert added.status_code == 200, added.text
    shown = (await dc.client.get(_url(dc, "/sc7"), headers=dc.auth)).json()["subcloud"]
    stored = {**URLS, "dcdbsync": "https://[fd00::7]:8220/v1.0"}  # trailing slash dropped
    assert shown["endpoints"] == stored
    assert shown["endpoint_types"] == ["identity"]
    assert set(shown["sync_status"]) == {"identity"}
    listed = (await dc.client.get(_url(dc), headers=dc.auth)).json()["subclouds"]
    assert [s["endpoints"] for s in listed] == [stored]
    row = await dc.db.get_subcloud("sc7")
    assert row.endpoints.given() == stored  # durable: read back from the database

    plain = await dc.client.post(_url(dc), json={"subcloud": "sc8"}, headers=dc.auth)
    assert plain.status_code == 200
    shown = (await dc.client.get(_url(dc, "/sc8"), headers=dc.auth)).json()["subcloud"]
    assert shown["endpoints"] == {}
    assert shown["endpoint_types"] == list(constants.SYNC_ENDPOINT_TYPES)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"endpoints": "https://x"}, "endpoints must be a JSON object, got str"),
        ({"endpoints": {"nova": "https://x:8774"}}, "endpoints: unknown service(s) nova"),
        ({"endpoints": {"keystone": 5001}}, "endpoints.keystone must be a string, got int"),
        ({"endpoints": {"keystone": "10.0.0.7:5001"}}, "endpoints.keystone must be an absolute"),
        ({"endpoints": {"sysinv": "ftp://10.0.0.7/v1"}}, "endpoints.sysinv must be an absolute"),
        ({"endpoints": {"dcdbsync": "/v1.0"}}, "endpoints.dcdbsync must be an absolute"),
        ({"endpoints": {"keystone": "http://x:99999"}}, "endpoints.keystone must be an absolute"),
        ({"endpoints": {"keystone": "http://x/v3?a=1"}}, "endpoints.keystone must be a service"),
        ({"endpoint_types": "identity"}, "endpoint_types must be a JSON list, got str"),
        ({"endpoint_types": []}, "endpoint_types must name at least one of platform, identity"),
        ({"endpoint_types": ["compute"]}, "endpoint_types: 'compute' is not synced here"),
        ({"endpoint_types": [1]}, "endpoint_types must hold strings, got int"),
        ({"endpoint_types": ["identity", "identity"]}, "endpoint_types must not repeat"),
    ],
)
async def test_bad_urls_or_endpoint_types_are_refused_naming_the_field(
    dc_empty: Dcorch, body: dict[str, Any], detail: str
) -> None:
    dc = dc_empty
    before = await _snapshot(dc)
    response = await dc.client.post(_url(dc), json={"subcloud": "sc9", **body}, headers=dc.auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert await _snapshot(dc) == before


async def test_put_replaces_or_clears_the_given_urls(dc_empty: Dcorch) -> None:
    dc = dc_empty
    await dc.client.post(_url(dc), json={"subcloud": "sc7", "endpoints": URLS}, headers=dc.auth)
    changed = await dc.client.put(
        _url(dc, "/sc7"),
        json={"endpoints": {"keystone": "http://127.0.0.9:5000"}},
        headers=dc.auth,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["subcloud"]["endpoints"] == {"keystone": "http://127.0.0.9:5000"}
    row = await dc.db.get_subcloud("sc7")
    assert row.endpoint_types == constants.SYNC_ENDPOINT_TYPES  # the rest of capabilities kept

    before = await _snapshot(dc)
    bad = await dc.client.put(
        _url(dc, "/sc7"), json={"endpoints": {"keystone": "nope"}}, headers=dc.auth
    )
    assert bad.status_code == 400
    assert "endpoints.keystone" in bad.json()["detail"]
    assert await _snapshot(dc) == before

    cleared = await dc.client.put(_url(dc, "/sc7"), json={"endpoints": {}}, headers=dc.auth)
    assert cleared.status_code == 200
    assert cleared.json()["subcloud"]["endpoints"] == {}
    missing = await dc.client.put(_url(dc, "/nosuch"), json={"endpoints": {}}, headers=dc.auth)
    assert missing.status_code == 404


async def test_the_openapi_document_describes_the_new_fields(dc_empty: Dcorch) -> None:
    doc = (await dc_empty.client.get(dc_empty.api_url + "/openapi.json")).json()
    paths = doc["paths"]
    add = paths["/v1.0/{project_id}/subclouds"]["post"]["requestBody"]["content"]
    add_props = add["application/json"]["schema"]["properties"]
    assert add_props["endpoints"]["type"] == "object"
    assert add_props["endpoints"]["additionalProperties"] is False
    assert set(add_props["endpoints"]["properties"]) == {"keystone", "sysinv", "dcdbsync"}
    assert add_props["endpoint_types"]["items"]["enum"] == list(constants.SYNC_ENDPOINT_TYPES)
    assert add_props["endpoint_types"]["uniqueItems"] is True
    put = paths["/v1.0/{project_id}/subclouds/{region}"]["put"]["requestBody"]["content"]
    put_props = put["application/json"]["schema"]["properties"]
    assert put_props["endpoints"] == add_props["endpoints"]
    assert "endpoint_types" not in put_props  # not changeable after the add
