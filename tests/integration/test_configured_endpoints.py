"""Subclouds added through the v1 API, synced at the URLs configuration and the API gave.

The simulator plays the real System Controller and subclouds here: it runs on its own and dcorch
runs with ``sim.enabled = false``, its ``[master]`` URLs pointing at the simulated master, so the
service is wired exactly as in production (``MasterEndpoints.from_settings``, the ``[subcloud]``
template, the v1 API's per-subcloud URLs). Everything is driven over HTTP.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio

from dcorch import constants
from dcorch.harness import Dcorch, open_dcorch
from dcorch.settings import Settings, SimSettings
from dcorch.sim import SimCloud, open_sim_cloud
from tests.conftest import harness_settings

PLATFORM_PARTS = ("certificates", "iuser", "fernet_repo")
"""What a subcloud that syncs identity only is never made to match."""


def _api(dc: Dcorch, path: str = "") -> str:
    return f"{dc.api_url}/v1.0/admin/subclouds{path}"


def _sim_urls(sim: SimCloud, region: str) -> dict[str, str]:
    """Where the simulator serves one subcloud, as an operator would give it to the v1 API."""
    ends = sim.endpoints
    return {
        "keystone": ends.subcloud_keystone(region),
        "sysinv": ends.subcloud_sysinv(region),
        "dcdbsync": ends.subcloud_dcdbsync(region),
    }


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _real_master(sim: SimCloud, *, sysinv: bool = True, dcmanager: bool = True) -> dict[str, str]:
    ends = sim.endpoints
    return {
        "keystone_url": ends.master_keystone,
        "dbsync_url": ends.master_dcdbsync,
        "sysinv_url": ends.master_sysinv if sysinv else "",
        "dcmanager_url": ends.master_dcmanager if dcmanager else "",
    }


def _settings(master: dict[str, str], **sections: dict[str, object]) -> Settings:
    return harness_settings().replace(sim={"enabled": False}, master=master, **sections)


@asynccontextmanager
async def _real_mode(
    subclouds: int, *, sysinv: bool = True, dcmanager: bool = True, **sections: dict[str, object]
) -> AsyncIterator[tuple[SimCloud, Dcorch]]:
    async with open_sim_cloud(SimSettings(subclouds=subclouds)) as sim:
        settings = _settings(_real_master(sim, sysinv=sysinv, dcmanager=dcmanager), **sections)
        async with open_dcorch(settings, ephemeral_ports=True) as dc:
            assert dc.sim is None  # nothing simulated inside dcorch: production wiring
            yield sim, dc


async def _add(dc: Dcorch, region: str, **body: Any) -> dict[str, Any]:
    response = await dc.client.post(_api(dc), json={"subcloud": region, **body}, headers=dc.auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _manage(dc: Dcorch, region: str) -> None:
    response = await dc.client.put(
        _api(dc, f"/{region}"),
        json={"management_state": "managed", "availability_status": "online"},
        headers=dc.auth,
    )
    assert response.status_code == 200, response.text


async def _initial_sync_ends(dc: Dcorch, region: str) -> str:
    """Poll the v1 API until the subcloud's initial sync has completed or failed."""
    with trio.fail_after(30):
        while True:
            response = await dc.client.get(_api(dc, f"/{region}/initial-sync"), headers=dc.auth)
            state = str(response.json()["initial_sync_state"])
            if state in (constants.INITIAL_SYNC_COMPLETED, constants.INITIAL_SYNC_FAILED):
                return state
            await trio.sleep(0.05)


async def _create_user(dc: Dcorch, name: str) -> str:
    user = {"user": {"name": name, "password": "s3cret-pw-1", "domain_id": "default"}}
    response = await dc.client.post(f"{dc.identity_url}/v3/users", json=user, headers=dc.auth)
    assert response.status_code == 201, response.text
    return str(response.json()["user"]["id"])


async def _synced_status(dc: Dcorch, region: str, endpoint_type: str) -> None:
    """Wait until the v1 API shows the pair in-sync."""
    with trio.fail_after(30):
        while True:
            response = await dc.client.get(_api(dc, f"/{region}/sync-status"), headers=dc.auth)
            pair = response.json()["endpoints"].get(endpoint_type, {})
            if pair.get("sync_status") == constants.SYNC_STATUS_IN_SYNC:
                return
            await trio.sleep(0.05)


async def test_subclouds_added_over_the_api_sync_at_the_given_or_template_urls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One subcloud with its URLs given syncs; one left to a template that points nowhere
    fails its initial sync naming that URL, then syncs once its URLs are given (PUT)."""
    caplog.set_level(logging.INFO)
    with _closed_port() as nowhere:
        template = {"scheme": "http", "keystone_port": nowhere}
        async with _real_mode(2, subcloud=template) as (sim, dc):
            given, templated = sim.regions
            # The management IP would only be used for services without a given URL: none here.
            await _add(dc, given, management_ip="127.0.0.2", endpoints=_sim_urls(sim, given))
            await _add(dc, templated, management_ip="127.0.0.1")
            shown = await dc.client.get(_api(dc, f"/{given}"), headers=dc.auth)
            assert shown.json()["subcloud"]["endpoints"] == _sim_urls(sim, given)
            for region in (given, templated):
                await _manage(dc, region)
            assert await _initial_sync_ends(dc, given) == constants.INITIAL_SYNC_COMPLETED
            assert await _initial_sync_ends(dc, templated) == constants.INITIAL_SYNC_FAILED
            failures = [
                r.getMessage()
                for r in caplog.records
                if r.getMessage().startswith(f"initial_sync.failed region={templated} ")
            ]
            assert failures, "the failed initial sync was not logged"
            assert f"http://127.0.0.1:{nowhere}/v3" in failures[0]

            user_id = await _create_user(dc, "alice")
            await sim.wait_converged([given], timeout=30)
            assert user_id in sim.subcloud(given).identity.users
            assert user_id not in sim.subcloud(templated).identity.users
            await _synced_status(dc, given, constants.ENDPOINT_TYPE_IDENTITY)
            assert sim.latest_status(given, constants.ENDPOINT_TYPE_IDENTITY) == "in-sync"

            # The operator gives the missing URLs and asks for the initial sync again.
            fixed = await dc.client.put(
                _api(dc, f"/{templated}"),
                json={"endpoints": _sim_urls(sim, templated)},
                headers=dc.auth,
            )
            assert fixed.status_code == 200, fixed.text
            assert fixed.json()["subcloud"]["endpoints"] == _sim_urls(sim, templated)
            again = await dc.client.put(
                _api(dc, f"/{templated}/initial-sync"),
                json={"initial_sync_state": "requested"},
                headers=dc.auth,
            )
            assert again.status_code == 200, again.text
            assert await _initial_sync_ends(dc, templated) == constants.INITIAL_SYNC_COMPLETED
            await _create_user(dc, "bob")
            await sim.wait_converged([given, templated], timeout=30)
            assert user_id in sim.subcloud(templated).identity.users  # the audit brought alice


async def test_a_keystone_only_master_syncs_identity_without_sysinv_or_dcmanager(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``master.sysinv_url`` and ``master.dcmanager_url`` empty: no platform proxy, identity-only
    subclouds, no fernet key distribution, status kept in the v1 API, all said once at start."""
    caplog.set_level(logging.INFO)
    async with _real_mode(1, sysinv=False, dcmanager=False) as (sim, dc):
        [region] = sim.regions
        assert set(dc.urls) == {constants.ENDPOINT_TYPE_IDENTITY, "api"}
        health = (await dc.client.get(f"{dc.api_url}/health")).json()
        assert set(health["master"]["dependencies"]) == {"keystone", "dbsync"}  # what it has
        notes = [r.getMessage() for r in caplog.records if r.name == "dcorch.service"]
        for expected in ("master.sysinv_url is empty", "master.dcmanager_url is empty"):
            said = [n for n in notes if expected in n]
            assert len(said) == 1, (expected, notes)
            assert [r.levelname for r in caplog.records if expected in r.getMessage()] == ["INFO"]

        before = await dc.db.list_subclouds()
        refused = await dc.client.post(
            _api(dc),
            json={"subcloud": "other", "endpoint_types": ["platform"], "management_ip": "::1"},
            headers=dc.auth,
        )
        assert refused.status_code == 400
        assert "platform" in refused.json()["detail"]
        assert "master.sysinv_url" in refused.json()["detail"]
        unaddressed = await dc.client.post(_api(dc), json={"subcloud": "other"}, headers=dc.auth)
        assert unaddressed.status_code == 400
        assert "management_ip required" in unaddressed.json()["detail"]
        assert await dc.db.list_subclouds() == before

        # Identity needs keystone and dcdbsync only: no management IP, no sysinv URL.
        urls = _sim_urls(sim, region)
        del urls["sysinv"]
        await _add(dc, region, endpoints=urls)
        shown = (await dc.client.get(_api(dc, f"/{region}"), headers=dc.auth)).json()["subcloud"]
        assert shown["endpoint_types"] == [constants.ENDPOINT_TYPE_IDENTITY]
        assert shown["endpoints"] == urls
        assert set(shown["sync_status"]) == {constants.ENDPOINT_TYPE_IDENTITY}

        keys_before = dict(sim.subcloud(region).platform.fernet_keys)
        assert keys_before != sim.master.platform.fernet_keys
        await _manage(dc, region)
        assert await _initial_sync_ends(dc, region) == constants.INITIAL_SYNC_COMPLETED
        assert sim.subcloud(region).platform.fernet_keys == keys_before  # not distributed

        user_id = await _create_user(dc, "carol")
        await sim.wait_converged([region], timeout=30, ignore=PLATFORM_PARTS)
        assert user_id in sim.subcloud(region).identity.users
        await _synced_status(dc, region, constants.ENDPOINT_TYPE_IDENTITY)
        assert sim.status_reports() == []  # nothing was sent anywhere
        # No attempt at the missing services: no failed key fetch, no failed report.
        complaints = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("dcorch") and r.levelno >= logging.WARNING
        ]
        assert complaints == []


async def test_the_harness_reproduction_an_unknown_region_fails_given_urls_sync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the harness with the simulator: a region added over the v1 API that the simulator
    does not serve fails its initial sync naming the URL; one given a simulated subcloud's URLs
    completes it and receives later proxied work."""
    caplog.set_level(logging.INFO)
    async with open_dcorch(
        harness_settings(subclouds=1), ephemeral_ports=True, register=False
    ) as dc:
        assert dc.sim is not None
        [target] = dc.sim.regions
        await _add(dc, "edge-unknown")
        await _add(dc, "edge-given", endpoints=_sim_urls(dc.sim, target))
        for region in ("edge-unknown", "edge-given"):
            await _manage(dc, region)
        assert await _initial_sync_ends(dc, "edge-unknown") == constants.INITIAL_SYNC_FAILED
        failed = [r.getMessage() for r in caplog.records if "region=edge-unknown" in r.getMessage()]
        assert any("/subclouds/edge-unknown/keystone/v3" in m for m in failed), failed
        assert await _initial_sync_ends(dc, "edge-given") == constants.INITIAL_SYNC_COMPLETED

        user_id = await _create_user(dc, "dave")
        # dcorch knows the simulated subcloud as edge-given: compare the clouds themselves.
        await dc.sim.wait_converged([target], timeout=30)
        assert user_id in dc.sim.subcloud(target).identity.users
