"""The ``[rpc]`` settings, checked once: a bad URL or choice stops start-up naming the key."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from dcorch.rpc.address import BrokerAddress, parse_transport_url
from dcorch.settings import RpcSettings

FRONT_DOORS = ("http", "rpc", "both")


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """Everything the RPC server and the caster need, in checked form."""

    address: BrokerAddress
    control_exchange: str
    worker_topic: str
    server: str
    dcmanager_exchange: str
    dcmanager_state_topic: str
    front_doors: str
    heartbeat: float
    prefetch: int
    reconnect_backoff: float
    reconnect_backoff_max: float
    connect_timeout: float
    confirm_timeout: float
    recent_ids: int

    @property
    def rpc_front_door(self) -> bool:
        """dcmanager's RPC drives the lifecycle (``rpc`` or ``both``)."""
        return self.front_doors in ("rpc", "both")

    @property
    def http_front_door(self) -> bool:
        """The v1 API drives the lifecycle (``http`` or ``both``)."""
        return self.front_doors in ("http", "both")

    @classmethod
    def from_settings(cls, rpc: RpcSettings) -> RpcConfig:
        """Check ``[rpc]``.

        Raises:
            ValueError: an unknown ``front_doors``, a URL that is not ``rabbit://`` (the message
                never holds the password), an empty exchange or topic, a prefetch of 0 (an
                unbounded server), or a backoff whose first delay exceeds its cap.
        """
        if rpc.front_doors not in FRONT_DOORS:
            raise ValueError(
                f"rpc.front_doors must be one of {', '.join(FRONT_DOORS)}, got {rpc.front_doors!r}"
            )
        for key in ("control_exchange", "dcmanager_exchange", "worker_topic"):
            if not getattr(rpc, key):
                raise ValueError(f"rpc.{key} must not be empty")
        if not rpc.dcmanager_state_topic:
            raise ValueError("rpc.dcmanager_state_topic must not be empty")
        if rpc.prefetch < 1:
            raise ValueError(f"rpc.prefetch must be at least 1, got {rpc.prefetch}")
        if rpc.reconnect_backoff > rpc.reconnect_backoff_max:
            raise ValueError("rpc.reconnect_backoff must not exceed rpc.reconnect_backoff_max")
        return cls(
            address=parse_transport_url(rpc.transport_url),
            control_exchange=rpc.control_exchange,
            worker_topic=rpc.worker_topic,
            server=rpc.server or socket.gethostname(),
            dcmanager_exchange=rpc.dcmanager_exchange,
            dcmanager_state_topic=rpc.dcmanager_state_topic,
            front_doors=rpc.front_doors,
            heartbeat=rpc.heartbeat,
            prefetch=rpc.prefetch,
            reconnect_backoff=rpc.reconnect_backoff,
            reconnect_backoff_max=rpc.reconnect_backoff_max,
            connect_timeout=rpc.connect_timeout,
            confirm_timeout=rpc.confirm_timeout,
            recent_ids=rpc.recent_ids,
        )
