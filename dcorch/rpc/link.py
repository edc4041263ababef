"""Staying connected to the broker: reconnect with capped, jittered backoff; the broker state.

Both the RPC server and the caster hold one :class:`BrokerLink`. Its :class:`BrokerState` is the
small object ``/health`` and ``/metrics`` read (connected, since when, the last error and the URL
without its password).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import trio

from actors import Backoff
from dcorch.rpc.address import BrokerAddress
from dcorch.rpc.amqp import AmqpError, Connection, ConnectionLost, open_connection

logger = logging.getLogger(__name__)

Session = Callable[[Connection, Callable[[], None]], Awaitable[None]]
"""``await session(connection, ready)``: uses one connection until it fails; calls ``ready()``
once it is set up (declared, consuming), which resets the backoff."""


@dataclass
class BrokerState:
    """The link's view of the broker, for ``/health`` and ``/metrics``."""

    url: str
    """The transport URL without its password."""
    connected: bool = False
    since: float = 0.0
    """Wall-clock time (``time.time()``) of the last change of ``connected``."""
    last_error: str | None = None
    connects: int = 0
    """Connections that got ready (the first one included)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BrokerHealth:
    """Every broker link of the process, as ``/health`` and ``/metrics`` show them.

    The broker is ``up`` only while every link is connected: the RPC server and the status
    caster hold separate connections, and either one down is a dcmanager direction lost.
    """

    def __init__(self, links: Mapping[str, BrokerState]) -> None:
        self._links = dict(links)

    def status(self) -> dict[str, Any]:
        """``{"status": "up"|"down", "url", "links": {name: state}}`` (no password)."""
        states = list(self._links.values())
        up = all(state.connected for state in states)
        return {
            "status": "up" if up else "down",
            "url": states[0].url if states else "",
            "links": {name: state.as_dict() for name, state in self._links.items()},
        }

    def up_series(self) -> Iterator[tuple[dict[str, str], float]]:
        """``dcorch_rpc_broker_up{link=...}``: 1 connected, 0 not."""
        for name, state in self._links.items():
            yield {"link": name}, 1.0 if state.connected else 0.0

    def connects_series(self) -> Iterator[tuple[dict[str, str], float]]:
        for name, state in self._links.items():
            yield {"link": name}, float(state.connects)


def amqp_error(exc: BaseException) -> AmqpError | None:
    """The broker error behind ``exc`` (itself, or the one inside nursery groups), else None."""
    if isinstance(exc, AmqpError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        errors = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if errors and all(amqp_error(e) is not None for e in errors):
            return amqp_error(errors[0])
    return None


class BrokerLink:
    """Runs a session on a connection, again and again, for as long as it is run."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        name: str,
        heartbeat: float,
        connect_timeout: float,
        backoff: float,
        backoff_max: float,
        rng: random.Random | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.state = BrokerState(url=address.redacted, since=time.time())
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._backoff = Backoff(base=backoff, cap=backoff_max, jitter=0.5)
        self._rng = rng or random.Random()

    async def run(self, session: Session) -> None:
        """Connect, run ``session``, and after any broker error wait and do it again.

        Errors that are not the broker's (a bug in the session) propagate: the supervisor
        restarts the owner.
        """
        failures = 0
        attempt = 0
        while True:
            ready = False

            def mark_ready() -> None:
                nonlocal ready, failures
                ready, failures = True, 0
                self.state.connected, self.state.since = True, time.time()
                self.state.connects += 1
                logger.info("rpc.broker_connected link=%s url=%s", self.name, self.state.url)

            try:
                async with open_connection(
                    self.address,
                    heartbeat=self._heartbeat,
                    connect_timeout=self._connect_timeout,
                    name=self.name,
                    attempt=attempt,
                ) as connection:
                    await session(connection, mark_ready)
                    raise ConnectionLost("the session ended")
            except (AmqpError, BaseExceptionGroup) as exc:
                error = amqp_error(exc)
                if error is None:
                    raise
            self.state.last_error = str(error)
            if self.state.connected or ready:
                self.state.connected, self.state.since = False, time.time()
            delay = self._backoff.delay(failures, self._rng)
            if self.state.connects == 0 and attempt == 0:
                # Said once, plainly, at start-up: dcorch runs on without the broker.
                logger.error(
                    "rpc.broker_unreachable link=%s url=%s error=%s: dcorch keeps running and "
                    "retries every %gs at most; until then dcmanager's RPC is not served and "
                    "sync status casts wait in the outbox (/health says degraded)",
                    self.name,
                    self.state.url,
                    error,
                    self._backoff.cap,
                )
            failures += 1
            attempt += 1
            logger.warning(
                "rpc.broker_disconnected link=%s url=%s error=%s retry_in=%.2fs",
                self.name,
                self.state.url,
                error,
                delay,
            )
            await trio.sleep(delay)
