"""Test actors and tasks that record what happens to them in a shared log."""

from __future__ import annotations

from typing import Any

import trio

from actors import Actor, State

Log = list[tuple[str, str]]


def state_of(ref: Any) -> State:
    """``ref.state`` read afresh (mypy keeps an earlier ``assert ref.state is X`` narrowing)."""
    state: State = ref.state
    return state


class Probe(Actor[Any, Any]):
    """Records start/stop/handled events.

    Messages: "crash" raises, a `trio.Event` is waited on (a gate), anything else is
    recorded and echoed back as (name, message).
    """

    def __init__(self, name: str, log: Log, *, hang_on_stop: bool = False) -> None:
        self.name = name
        self.log = log
        self.hang_on_stop = hang_on_stop

    async def on_start(self) -> None:
        self.log.append(("start", self.name))

    async def on_stop(self) -> None:
        self.log.append(("stop", self.name))
        if self.hang_on_stop:
            await trio.sleep_forever()

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if isinstance(message, trio.Event):
            await message.wait()
            return "released"
        self.log.append(("handled", f"{self.name}:{message}"))
        return (self.name, message)


def probe(name: str, log: Log, **kwargs: Any) -> Any:
    """A factory for ActorSpec(factory=...)."""
    return lambda: Probe(name, log, **kwargs)


class SlowStop(Probe):
    """A probe whose on_stop takes one second; it records ("stopped", name) when done."""

    async def on_stop(self) -> None:
        await super().on_stop()
        await trio.sleep(1)
        self.log.append(("stopped", self.name))
