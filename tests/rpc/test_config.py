"""``[rpc]``: checked once, the password never shown; the link's backoff in virtual time."""

from __future__ import annotations

import logging
import random
import socket

import pytest
import trio

from actors import Backoff
from dcorch.rpc.address import BadTransportUrl, parse_transport_url
from dcorch.rpc.config import RpcConfig
from dcorch.rpc.link import BrokerLink
from dcorch.settings import RpcSettings, Settings


def test_defaults_are_upstreams_names() -> None:
    config = RpcConfig.from_settings(Settings().rpc)
    assert (config.control_exchange, config.worker_topic) == (
        "dcorch-engine",
        "dcorch-engine-worker",
    )
    assert (config.dcmanager_exchange, config.dcmanager_state_topic) == (
        "dcmanager",
        "dcmanager-state",
    )
    assert config.server == socket.gethostname()
    assert (config.http_front_door, config.rpc_front_door) == (True, False)
    assert config.address.virtual_host == "/"
    both = RpcConfig.from_settings(RpcSettings(front_doors="both", server="controller-0"))
    assert (both.http_front_door, both.rpc_front_door, both.server) == (True, True, "controller-0")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"front_doors": "amqp"}, "rpc.front_doors must be one of http, rpc, both, got 'amqp'"),
        ({"prefetch": 0}, "rpc.prefetch must be at least 1"),
        ({"worker_topic": ""}, "rpc.worker_topic must not be empty"),
        ({"reconnect_backoff": 60.0}, "must not exceed rpc.reconnect_backoff_max"),
        ({"transport_url": "kafka://u:s3cret@h/"}, "must start with rabbit://"),
        ({"transport_url": "rabbit://u:s3cret@h:port/"}, "bad port for host h"),
        ({"transport_url": "rabbit:///"}, "names no broker host"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_key(
    changes: dict[str, object], message: str
) -> None:
    settings = Settings().replace(rpc=changes)
    with pytest.raises(ValueError, match=message) as caught:
        RpcConfig.from_settings(settings.rpc)
    assert "s3cret" not in str(caught.value)


def test_urls_with_hosts_and_virtual_hosts_are_redacted() -> None:
    address = parse_transport_url("rabbit://dc:p%40ss@10.0.0.2:5673,dc:p%40ss@[fd00::2]/dc%2Fvhost")
    assert [(h.host, h.port, h.password) for h in address.hosts] == [
        ("10.0.0.2", 5673, "p@ss"),
        ("fd00::2", 5672, "p@ss"),
    ]
    assert address.virtual_host == "dc/vhost"
    assert address.redacted == "rabbit://dc:***@10.0.0.2:5673,dc:***@[fd00::2]:5672/dc%2Fvhost"
    assert "p@ss" not in repr(address)
    with pytest.raises(BadTransportUrl):
        parse_transport_url("http://x")


class _VirtualTimes(logging.Handler):
    """The virtual time of each disconnect log line of the link."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("rpc.broker_disconnected"):
            self.times.append(trio.current_time())


async def test_an_unreachable_broker_is_retried_with_capped_jittered_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing listens on the port: each attempt fails at once, the waits double to the cap."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: a refused connect
    link = BrokerLink(
        parse_transport_url(f"rabbit://guest:secret@127.0.0.1:{port}/"),
        name="test",
        heartbeat=10,
        connect_timeout=5,
        backoff=1.0,
        backoff_max=4.0,
        rng=random.Random(7),
    )

    async def session(connection: object, ready: object) -> None:
        raise AssertionError("connected to a closed port")

    handler = _VirtualTimes()
    logger = logging.getLogger("dcorch.rpc.link")
    logger.addHandler(handler)
    try:
        start = trio.current_time()
        with trio.move_on_after(20):
            await link.run(session)
    finally:
        logger.removeHandler(handler)
    rng = random.Random(7)
    backoff = Backoff(base=1.0, cap=4.0, jitter=0.5)
    expected, at = [], start
    while at <= start + 20:
        expected.append(at)
        at += backoff.delay(len(expected) - 1, rng)
    assert handler.times == pytest.approx(expected)
    gaps = [b - a for a, b in zip(handler.times, handler.times[1:], strict=False)]
    assert 1.0 <= gaps[0] < 1.5
    assert 2.0 <= gaps[1] < 3.0
    assert gaps[-1] == 4.0
    assert link.state.connected is False
    assert "cannot connect to 127.0.0.1" in str(link.state.last_error)
    assert "secret" not in link.state.url + str(link.state.last_error)
