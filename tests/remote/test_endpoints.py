"""Endpoint resolution from settings and from the URLs given to the v1 API."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dcorch.db.rows import GivenEndpoints, SubcloudRow
from dcorch.remote.endpoints import GivenFirstResolver, ManagementIpResolver, MasterEndpoints
from dcorch.settings import MasterSettings, SubcloudSettings

ROW = SubcloudRow(
    id=1,
    uuid="u",
    region_name="sc1",
    software_version="",
    management_state=None,
    availability_status="offline",
    initial_sync_state="none",
    subsequent_sync=False,
    management_ip="fd00::5",
    endpoint_types=("platform", "identity"),
    created_at=None,
    updated_at=None,
)


@pytest.mark.parametrize(
    ("keystone_url", "dbsync"),
    [
        ("http://ks:5000", "http://ks:8219/v1.0"),
        ("https://ks:5000/v3/", "https://ks:8219/v1.0"),
        ("http://ks", "http://ks:8219/v1.0"),
        ("http://[fd00::2]:5000/v3", "http://[fd00::2]:8219/v1.0"),
    ],
)
def test_an_empty_dbsync_url_is_derived_from_keystones_host(keystone_url: str, dbsync: str) -> None:
    master = MasterEndpoints.from_settings(MasterSettings(keystone_url=keystone_url))
    assert master.dcdbsync == dbsync
    assert master.dcdbsync_derived
    assert master.sysinv == master.dcmanager == ""
    assert master.sync_endpoint_types == ("identity",)


def test_given_master_urls_are_used_with_their_versions_added_once() -> None:
    master = MasterEndpoints.from_settings(
        MasterSettings(
            keystone_url="http://ks:5000/v3",
            dbsync_url="http://agent:9000/v1.0/",
            sysinv_url="http://ks:6385",
            dcmanager_url="http://ks:8119/v1.0",
        )
    )
    assert (master.keystone, master.dcdbsync, master.sysinv, master.dcmanager) == (
        "http://ks:5000/v3",
        "http://agent:9000/v1.0",
        "http://ks:6385/v1",
        "http://ks:8119/v1.0",
    )
    assert not master.dcdbsync_derived
    assert master.notes() == ["master.usm_url is empty: no usm proxy"]
    assert master.sync_endpoint_types == ("platform", "identity")


def test_the_template_builds_urls_on_the_management_ip() -> None:
    template = ManagementIpResolver.from_settings(SubcloudSettings(scheme="http", sysinv_port=7))
    urls = template.endpoints_for(ROW)
    assert urls.keystone == "http://[fd00::5]:5001/v3"
    assert urls.sysinv == "http://[fd00::5]:7/v1"
    assert urls.dcdbsync == "http://[fd00::5]:8220/v1.0"


def test_given_urls_win_service_by_service() -> None:
    resolver = GivenFirstResolver(ManagementIpResolver())
    row = replace(ROW, endpoints=GivenEndpoints(keystone="http://127.0.0.1:5000"))
    urls = resolver.endpoints_for(row)
    assert urls.keystone == "http://127.0.0.1:5000/v3"  # version added
    assert urls.sysinv == "https://[fd00::5]:6386/v1"  # from the template
    every = GivenEndpoints("http://a/v3", "http://b:1", "http://c/v1.0")
    urls = resolver.endpoints_for(replace(ROW, endpoints=every))
    assert (urls.keystone, urls.sysinv, urls.dcdbsync) == (
        "http://a/v3",
        "http://b:1/v1",
        "http://c/v1.0",
    )
    assert resolver.endpoints_for(ROW) == ManagementIpResolver().endpoints_for(ROW)
