"""dcmanager's lifecycle calls through the RPC endpoint's handlers, on SQLite and PostgreSQL.

Each handler is called as the transport calls it, ``await handler(ctxt, **kwargs)`` with
upstream's keyword arguments, and the test asserts the rows it leaves. Refusals are
:class:`RpcFailure` with upstream's exception class and module, and change nothing. The last
tests drive the same changes through the v1 API (over HTTP, sharing the lifecycle) and find the
same rows: one implementation, two front doors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from dcorch import constants as c
from dcorch.api.app import Caller, create_api_app
from dcorch.asgi import serve_asgi
from dcorch.db import Database, open_database
from dcorch.db.commits import Committed
from dcorch.lifecycle import SubcloudLifecycle
from dcorch.rpc.contract import Handler, RpcFailure
from dcorch.rpc.dcmanager_endpoint import SIGNATURES, DcmanagerEndpoint
from tests.db.conftest import (  # noqa: F401 - fixtures
    FAST,
    pg_server,
    pg_session_url,
    postgres_url,
    sqlite_template,
    sqlite_url,
)

CTXT = {"request_id": "req-test", "is_admin": True, "user": "dcmanager"}


class Events:
    """The engine's side of the lifecycle, noted in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def subcloud_changed(self, region: str) -> None:
        self.seen.append(("changed", region))

    async def subcloud_deleted(self, region: str) -> None:
        self.seen.append(("deleted", region))


class Rpc:
    """The endpoint's handlers, called the way the RPC server calls them."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers

    async def __call__(self, method: str, **kwargs: Any) -> Any:
        return await self.handlers[method](CTXT, **kwargs)

    async def refused(self, method: str, **kwargs: Any) -> RpcFailure:
        with pytest.raises(RpcFailure) as caught:
            await self(method, **kwargs)
        return caught.value


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """The real database, SQLite and PostgreSQL (``tests/db/conftest.py``)."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    async with open_database(url, database=FAST) as database:
        yield database


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def lifecycle(store: Database, events: Events) -> SubcloudLifecycle:
    return SubcloudLifecycle(store, events=events)


@pytest.fixture
def rpc(lifecycle: SubcloudLifecycle) -> Rpc:
    return Rpc(DcmanagerEndpoint(lifecycle).handlers())


async def snapshot(store: Database) -> tuple[Any, ...]:
    """Everything a refused call must leave as it was."""
    return (await store.list_subclouds(), await store.list_subcloud_syncs())


async def add(rpc: Rpc, region: str = "subcloud1", ip: str = "192.168.101.2") -> None:
    await rpc("add_subcloud", subcloud_name=region, sw_version="24.09", management_ip=ip)


async def test_the_endpoint_serves_upstreams_worker_methods(lifecycle: SubcloudLifecycle) -> None:
    assert set(DcmanagerEndpoint(lifecycle).handlers()) == {
        "add_subcloud",
        "del_subcloud",
        "update_subcloud_states",
        "update_subcloud_version",
        "update_subcloud_management_ip",
        "add_subcloud_sync_endpoint_type",
        "remove_subcloud_sync_endpoint_type",
        "sync_request",
    }
    assert [a.name for a in SIGNATURES["add_subcloud"]] == [
        "subcloud_name",
        "sw_version",
        "management_ip",
    ]


async def test_add_subcloud_creates_it_offline_with_a_sync_row_per_endpoint(
    store: Database, rpc: Rpc, events: Events
) -> None:
    reply = await rpc(
        "add_subcloud", subcloud_name="subcloud1", sw_version="24.09", management_ip="192.168.1.2"
    )
    assert reply is None  # upstream's call returns nothing
    row = await store.get_subcloud("subcloud1")
    assert (row.software_version, row.management_ip) == ("24.09", "192.168.1.2")
    assert row.management_state is None
    assert row.availability_status == c.AVAILABILITY_OFFLINE
    assert row.initial_sync_state == c.INITIAL_SYNC_NONE
    assert row.subsequent_sync is False
    assert row.endpoint_types == c.SYNC_ENDPOINT_TYPES
    syncs = await store.list_subcloud_syncs("subcloud1")
    assert [s.endpoint_type for s in syncs] == ["identity", "platform"]
    assert {(s.sync_request, s.sync_status_reported, s.audit_status) for s in syncs} == {
        ("none", "none", "none")
    }
    assert events.seen == [("changed", "subcloud1")]


async def test_duplicate_region_is_upstreams_db_duplicate_entry(
    store: Database, rpc: Rpc, events: Events
) -> None:
    await add(rpc)
    before = await snapshot(store)
    failure = await rpc.refused(
        "add_subcloud", subcloud_name="subcloud1", sw_version="25.03", management_ip="10.0.0.9"
    )
    assert (failure.exc_class, failure.exc_module) == ("DBDuplicateEntry", "oslo_db.exception")
    assert "subcloud1" in failure.message
    assert failure.kwargs == {"columns": ["region_name"], "value": "subcloud1"}
    assert await snapshot(store) == before
    assert events.seen == [("changed", "subcloud1")]


async def test_update_subcloud_states_follows_upstream(
    store: Database, rpc: Rpc, events: Events
) -> None:
    await add(rpc)
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="unmanaged",
        availability_status="online",
    )
    row = await store.get_subcloud("subcloud1")
    assert (row.management_state, row.availability_status) == ("unmanaged", "online")
    assert row.initial_sync_state == c.INITIAL_SYNC_NONE

    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="managed",
        availability_status="online",
    )
    assert (await store.get_subcloud("subcloud1")).initial_sync_state == c.INITIAL_SYNC_REQUESTED
    assert await store.set_initial_sync_state(
        "subcloud1", c.INITIAL_SYNC_REQUESTED, c.INITIAL_SYNC_COMPLETED, subsequent_sync=True
    )

    # Unchanged: ignored, no write (the initial sync stays completed) and no wake.
    events.seen.clear()
    before = await snapshot(store)
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="managed",
        availability_status="online",
    )
    assert await snapshot(store) == before
    assert events.seen == []

    # Offline while managed: initial sync cancelled, subsequent_sync kept (ded7177e).
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="managed",
        availability_status="offline",
    )
    row = await store.get_subcloud("subcloud1")
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, True)
    # Back online: requested again; unmanaged: none and subsequent_sync cleared.
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="managed",
        availability_status="online",
    )
    assert (await store.get_subcloud("subcloud1")).initial_sync_state == c.INITIAL_SYNC_REQUESTED
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state="unmanaged",
        availability_status="online",
    )
    row = await store.get_subcloud("subcloud1")
    assert (row.initial_sync_state, row.subsequent_sync) == (c.INITIAL_SYNC_NONE, False)
    # None keeps a state, as upstream's "is not None" comparisons do.
    await rpc(
        "update_subcloud_states",
        subcloud_name="subcloud1",
        management_state=None,
        availability_status="offline",
    )
    row = await store.get_subcloud("subcloud1")
    assert (row.management_state, row.availability_status) == ("unmanaged", "offline")
    assert events.seen == [("changed", "subcloud1")] * 4


async def test_version_and_management_ip_updates(store: Database, rpc: Rpc, events: Events) -> None:
    await add(rpc)
    assert (
        await rpc("update_subcloud_version", subcloud_name="subcloud1", sw_version="25.03") is None
    )
    assert (await store.get_subcloud("subcloud1")).software_version == "25.03"
    await rpc("update_subcloud_management_ip", subcloud_name="subcloud1", management_ip="fd01::7")
    row = await store.get_subcloud("subcloud1")
    assert (row.software_version, row.management_ip) == ("25.03", "fd01::7")
    assert events.seen == [("changed", "subcloud1")] * 3


async def test_sync_endpoint_types_are_removed_and_added(
    store: Database, rpc: Rpc, events: Events
) -> None:
    await add(rpc)
    await rpc(
        "remove_subcloud_sync_endpoint_type",
        subcloud_name="subcloud1",
        endpoint_type_list=["identity", "identity_openstack"],  # an absent type is ignored
    )
    assert (await store.get_subcloud("subcloud1")).endpoint_types == ("platform",)
    assert [s.endpoint_type for s in await store.list_subcloud_syncs("subcloud1")] == ["platform"]

    await store.update_subcloud_sync("subcloud1", "platform", sync_request=c.SYNC_REQUEST_COMPLETED)
    await rpc(
        "add_subcloud_sync_endpoint_type",
        subcloud_name="subcloud1",
        endpoint_type_list=["identity", "platform"],
    )
    assert (await store.get_subcloud("subcloud1")).endpoint_types == ("platform", "identity")
    syncs = {s.endpoint_type: s for s in await store.list_subcloud_syncs("subcloud1")}
    assert syncs["identity"].sync_request == c.SYNC_REQUEST_NONE  # a fresh row
    assert syncs["platform"].sync_request == c.SYNC_REQUEST_COMPLETED  # kept as it was

    # None (upstream's default) and [] change nothing and wake nothing.
    before = await snapshot(store)
    events.seen.clear()
    await rpc("add_subcloud_sync_endpoint_type", subcloud_name="subcloud1")
    await rpc(
        "remove_subcloud_sync_endpoint_type", subcloud_name="subcloud1", endpoint_type_list=[]
    )
    assert await snapshot(store) == before
    assert events.seen == []


async def test_a_type_without_a_driver_is_refused(store: Database, rpc: Rpc) -> None:
    await add(rpc)
    before = await snapshot(store)
    failure = await rpc.refused(
        "add_subcloud_sync_endpoint_type",
        subcloud_name="subcloud1",
        endpoint_type_list=["identity_openstack"],
    )
    assert (failure.exc_class, failure.exc_module) == (
        "InvalidParameterValue",
        "dcorch.common.exceptions",
    )
    assert failure.message.startswith("endpoint_type_list: 'identity_openstack' is not synced")
    assert failure.kwargs == {"err": failure.message}
    assert await snapshot(store) == before


async def test_sync_request_requests_and_wakes_every_managed_pair(
    store: Database, rpc: Rpc
) -> None:
    for region in ("sc1", "sc2", "sc3"):
        await add(rpc, region)
    for region in ("sc1", "sc2"):
        await rpc(
            "update_subcloud_states",
            subcloud_name=region,
            management_state="managed",
            availability_status="online",
        )
    await store.update_subcloud_sync("sc2", "identity", sync_request=c.SYNC_REQUEST_IN_PROGRESS)

    assert await rpc("sync_request", endpoint_type="identity") is None
    requests = {
        (s.subcloud_name, s.endpoint_type): s.sync_request
        for s in await store.list_subcloud_syncs()
    }
    assert requests == {
        ("sc1", "identity"): "requested",
        ("sc1", "platform"): "none",
        ("sc2", "identity"): "in-progress",  # left alone, as upstream
        ("sc2", "platform"): "none",
        ("sc3", "identity"): "none",  # never managed
        ("sc3", "platform"): "none",
    }
    # The engine hears of it the way it hears of committed work: on the commit feed.
    with trio.fail_after(5):
        woken = await store.commits.receive()
    assert woken == Committed(frozenset({("sc1", "identity"), ("sc2", "identity")}))
    await rpc("sync_request", endpoint_type="usm")  # nobody syncs it: nothing to wake
    assert store.commits.pending() == 0


async def test_del_subcloud_deletes_it_and_an_unknown_region_is_subcloud_not_found(
    store: Database, rpc: Rpc, events: Events
) -> None:
    await add(rpc, "sc1")
    await add(rpc, "sc2")
    assert await rpc("del_subcloud", subcloud_name="sc1") is None
    assert [r.region_name for r in await store.list_subclouds()] == ["sc2"]
    assert {s.subcloud_name for s in await store.list_subcloud_syncs()} == {"sc2"}
    assert events.seen[-1] == ("deleted", "sc1")

    before = await snapshot(store)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("del_subcloud", {}),
        (
            "update_subcloud_states",
            {"management_state": "managed", "availability_status": "online"},
        ),
        ("update_subcloud_version", {"sw_version": "25.03"}),
        ("update_subcloud_management_ip", {"management_ip": "10.1.1.1"}),
        ("add_subcloud_sync_endpoint_type", {"endpoint_type_list": ["identity"]}),
        ("remove_subcloud_sync_endpoint_type", {"endpoint_type_list": ["identity"]}),
    ]
    for method, kwargs in calls:
        failure = await rpc.refused(method, subcloud_name="sc1", **kwargs)
        assert (failure.exc_class, failure.exc_module) == (
            "SubcloudNotFound",
            "dcorch.common.exceptions",
        ), method
        assert failure.message == "Subcloud sc1 not found"
        assert failure.kwargs == {"region_name": "sc1"}
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("method", "kwargs", "exc_class", "message"),
    [
        (
            "add_subcloud",
            {"subcloud_name": "sc9", "sw_version": "24.09"},
            "TypeError",
            "add_subcloud() missing 1 required argument: 'management_ip'",
        ),
        (
            "add_subcloud",
            {
                "subcloud_name": "sc9",
                "sw_version": "24.09",
                "management_ip": "10.0.0.1",
                "colour": "red",
            },
            "TypeError",
            "add_subcloud() got unexpected keyword argument 'colour'",
        ),
        (
            "update_subcloud_states",
            {"subcloud_name": "sc1"},
            "TypeError",
            "update_subcloud_states() missing 2 required arguments: "
            "'management_state', 'availability_status'",
        ),
        (
            "add_subcloud",
            {"subcloud_name": "sc9", "sw_version": 24.09, "management_ip": "10.0.0.1"},
            "InvalidParameterValue",
            "sw_version must be a string, got float",
        ),
        (
            "add_subcloud",
            {"subcloud_name": "bad/name", "sw_version": "24.09", "management_ip": "10.0.0.1"},
            "InvalidParameterValue",
            "invalid subcloud region name 'bad/name'",
        ),
        (
            "add_subcloud",
            {"subcloud_name": "sc9", "sw_version": "24.09", "management_ip": "300.1.1.1"},
            "InvalidParameterValue",
            "management_ip must be an IP address, got '300.1.1.1'",
        ),
        (
            "update_subcloud_states",
            {"subcloud_name": "sc1", "management_state": "sort-of", "availability_status": None},
            "InvalidParameterValue",
            "management_state must be one of managed, unmanaged, got 'sort-of'",
        ),
        (
            "update_subcloud_states",
            {"subcloud_name": "sc1", "management_state": None, "availability_status": 1},
            "InvalidParameterValue",
            "availability_status must be a string or null, got int",
        ),
        (
            "update_subcloud_management_ip",
            {"subcloud_name": "sc1", "management_ip": "nowhere"},
            "InvalidParameterValue",
            "management_ip must be an IP address, got 'nowhere'",
        ),
        (
            "add_subcloud_sync_endpoint_type",
            {"subcloud_name": "sc1", "endpoint_type_list": "identity"},
            "InvalidParameterValue",
            "endpoint_type_list must be a list or null, got str",
        ),
        (
            "remove_subcloud_sync_endpoint_type",
            {"subcloud_name": "sc1", "endpoint_type_list": [7]},
            "InvalidParameterValue",
            "endpoint_type_list must hold strings, got int",
        ),
        (
            "sync_request",
            {},
            "TypeError",
            "sync_request() missing 1 required argument: 'endpoint_type'",
        ),
    ],
)
async def test_bad_arguments_are_refused_naming_the_problem_and_change_nothing(
    store: Database,
    rpc: Rpc,
    events: Events,
    method: str,
    kwargs: dict[str, Any],
    exc_class: str,
    message: str,
) -> None:
    await add(rpc, "sc1")
    before = await snapshot(store)
    events.seen.clear()
    failure = await rpc.refused(method, **kwargs)
    module = "builtins" if exc_class == "TypeError" else "dcorch.common.exceptions"
    assert (failure.exc_class, failure.exc_module, failure.message) == (exc_class, module, message)
    assert await snapshot(store) == before
    assert events.seen == []
    assert store.commits.pending() == 0


# -- the same changes through the v1 API -----------------------------------------------------------


async def _admin(token: str) -> Caller:
    return Caller(frozenset({"admin"}), "admin", "default")


@pytest.fixture
async def api(
    nursery: trio.Nursery, store: Database, lifecycle: SubcloudLifecycle
) -> AsyncIterator[httpx.AsyncClient]:
    """The v1 API over HTTP, changing subclouds through the same lifecycle as the endpoint."""
    app = create_api_app(store, token_check=_admin, lifecycle=lifecycle)
    [url] = await nursery.start(partial(serve_asgi, app, "127.0.0.1", 0))
    base = f"{url}/v1.0/admin"
    async with httpx.AsyncClient(base_url=base, headers={"X-Auth-Token": "t"}) as client:
        yield client


def _comparable(row: Any) -> tuple[Any, ...]:
    """A subcloud as the lifecycle left it, without what differs by nature (ids, times)."""
    return (
        row.software_version,
        row.management_state,
        row.availability_status,
        row.initial_sync_state,
        row.subsequent_sync,
        row.management_ip,
        row.endpoint_types,
    )


async def _state(store: Database, region: str) -> tuple[Any, ...]:
    syncs = await store.list_subcloud_syncs(region)
    return (
        _comparable(await store.get_subcloud(region)),
        [(s.endpoint_type, s.sync_request, s.sync_status_reported) for s in syncs],
    )


async def test_the_v1_api_and_rpc_leave_the_same_rows(
    store: Database, rpc: Rpc, api: httpx.AsyncClient, events: Events
) -> None:
    steps_api: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/subclouds",
            {"subcloud": "via-api", "software_version": "24.09", "management_ip": "10.0.0.2"},
        ),
        (
            "PUT",
            "/subclouds/via-api",
            {"management_state": "unmanaged", "availability_status": "online"},
        ),
        (
            "PUT",
            "/subclouds/via-api",
            {"management_state": "managed", "availability_status": "online"},
        ),
        ("PUT", "/subclouds/via-api", {"software_version": "25.03"}),
        ("PUT", "/subclouds/via-api", {"management_ip": "10.0.0.3"}),
        ("PUT", "/subclouds/via-api", {"availability_status": "offline"}),
    ]
    for method, path, body in steps_api:
        response = await api.request(method, path, json=body)
        assert response.status_code == 200, response.text
    api_events = list(events.seen)

    events.seen.clear()
    await add(rpc, "via-rpc", "10.0.0.2")
    for mgmt, avail in (("unmanaged", "online"), ("managed", "online")):
        await rpc(
            "update_subcloud_states",
            subcloud_name="via-rpc",
            management_state=mgmt,
            availability_status=avail,
        )
    await rpc("update_subcloud_version", subcloud_name="via-rpc", sw_version="25.03")
    await rpc("update_subcloud_management_ip", subcloud_name="via-rpc", management_ip="10.0.0.3")
    await rpc(
        "update_subcloud_states",
        subcloud_name="via-rpc",
        management_state=None,
        availability_status="offline",
    )
    assert await _state(store, "via-api") == await _state(store, "via-rpc")
    assert [kind for kind, _ in api_events] == [kind for kind, _ in events.seen]

    # Refusals agree too: the duplicate (409 / DBDuplicateEntry), the bad IP, the unknown region.
    before = await snapshot(store)
    duplicate = await api.post("/subclouds", json={"subcloud": "via-rpc"})
    assert duplicate.status_code == 409
    bad_ip = await api.put("/subclouds/via-api", json={"management_ip": "300.1.1.1"})
    assert (bad_ip.status_code, bad_ip.json()["detail"]) == (
        400,
        "management_ip must be an IP address, got '300.1.1.1'",
    )
    failure = await rpc.refused(
        "update_subcloud_management_ip", subcloud_name="via-rpc", management_ip="300.1.1.1"
    )
    assert failure.message == bad_ip.json()["detail"]
    assert (await api.delete("/subclouds/nobody")).status_code == 404
    assert await snapshot(store) == before

    deleted = await api.delete("/subclouds/via-api")
    assert deleted.status_code == 200
    await rpc("del_subcloud", subcloud_name="via-rpc")
    assert await store.list_subclouds() == []
    assert events.seen[-1] == ("deleted", "via-rpc")
