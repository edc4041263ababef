"""``dcorch serve``: what the operator sees, and settings that contradict each other."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dcorch.harness import open_dcorch
from dcorch.metrics import Metrics
from dcorch.remote.endpoints import MasterEndpoints
from dcorch.serve import banner, serve_forever
from dcorch.service import Service
from dcorch.settings import Settings


def test_a_real_master_url_beside_the_simulator_stops_start_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings().replace(master={"keystone_url": "http://127.0.0.1:5000"})
    assert serve_forever(settings) == 1
    err = capsys.readouterr().err
    assert "master.keystone_url is set (http://127.0.0.1:5000)" in err
    assert "sim.enabled is true" in err


@pytest.mark.parametrize(
    ("sections", "keys"),
    [
        ({"master": {"dbsync_url": "http://127.0.0.1:8219"}}, ("master.dbsync_url", "sim.enabled")),
        ({"master": {"sysinv_url": "http://127.0.0.1:6385"}}, ("master.sysinv_url", "sim.enabled")),
        ({"subcloud": {"scheme": "http"}}, ("subcloud.scheme", "sim.enabled")),
        ({"sim": {"enabled": False}}, ("master.keystone_url", "sim.enabled")),
        (
            {"sim": {"enabled": False}, "master": {"keystone_url": "http://127.0.0.1:1"}}
            | {"subcloud": {"scheme": "gopher"}},
            ("subcloud.scheme",),
        ),
    ],
)
def test_contradicting_or_missing_endpoint_settings_stop_start_up(
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, dict[str, object]],
    keys: tuple[str, ...],
) -> None:
    settings = Settings().replace(service={"data_dir": "/nonexistent/never-created"}, **sections)
    assert serve_forever(settings) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcorch: cannot start: ")
    for key in keys:
        assert key in err


async def test_the_harness_refuses_a_real_master_url_beside_the_simulator() -> None:
    settings = Settings().replace(master={"dcmanager_url": "http://127.0.0.1:8119"})
    with pytest.raises(ValueError, match=r"master\.dcmanager_url is set .* sim\.enabled is true"):
        async with open_dcorch(settings, ephemeral_ports=True):
            raise AssertionError("started despite the contradiction")


async def test_the_harness_refuses_simulated_subclouds_without_the_simulator() -> None:
    settings = Settings().replace(
        sim={"enabled": False}, master={"keystone_url": "http://127.0.0.1:1"}
    )
    with pytest.raises(ValueError, match=r"subclouds= .* sim\.enabled is false"):
        async with open_dcorch(settings, subclouds=2, ephemeral_ports=True):
            raise AssertionError("started despite the contradiction")


def _service(master: MasterEndpoints) -> Service:
    return Service(
        settings=Settings(),
        db=cast(Any, None),
        system=cast(Any, None),
        sync_manager=None,
        metrics=Metrics(),
        master=master,
        http=cast(Any, None),
        tokens=cast(Any, None),
        urls={
            "identity": "http://127.0.0.1:25000",
            "platform": "http://127.0.0.1:26385",
            "api": "http://127.0.0.1:8118",
        },
    )


def test_banner_with_a_real_master_shows_how_to_get_a_token_not_a_token() -> None:
    master = MasterEndpoints(
        "http://10.0.0.2:5000/v3",
        "http://10.0.0.2:6385/v1",
        "http://10.0.0.2:8219/v1.0",
        "http://10.0.0.2:8119/v1.0",
    )
    text = banner(_service(master))
    assert "openstack --os-auth-url http://10.0.0.2:5000/v3" in text
    assert "token issue" in text
    assert "TOKEN=" not in text


def test_banner_with_the_simulator_shows_its_test_token() -> None:
    master = MasterEndpoints("http://sim/k/v3", "http://sim/s/v1", "http://sim/d/v1.0", "http://x")
    text = banner(_service(master), token="sim-admin-token")
    assert "TOKEN=sim-admin-token" in text
    assert "token issue" not in text
