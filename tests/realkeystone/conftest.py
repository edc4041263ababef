"""Fixtures that start real Keystone 30 instances (see keystone.py) and stop them all afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realkeystone.keystone import KeystoneInstance, start_in_parallel, stop_in_parallel


class KeystoneFactory:
    """Starts named Keystone instances, each in its own temporary directory; stops them all.

    Instances live until stop_all() (the session's end) unless a test stops them itself, so a
    module- or session-scoped fixture may share one set of Keystones between tests.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.instances: list[KeystoneInstance] = []

    def create(self, name: str = "keystone", *, cache: bool = False) -> KeystoneInstance:
        """A prepared-on-start, not yet running instance (start it yourself)."""
        instance = KeystoneInstance(self._tmp.mktemp(f"keystone-{name}"), name=name, cache=cache)
        self.instances.append(instance)
        return instance

    def __call__(self, name: str = "keystone", *, cache: bool = False) -> KeystoneInstance:
        """One running instance."""
        instance = self.create(name, cache=cache)
        instance.start()
        return instance

    def many(self, *names: str, cache: bool = False) -> list[KeystoneInstance]:
        """Several running instances, started in parallel (three take about 8-10 s here)."""
        return start_in_parallel([self.create(name, cache=cache) for name in names])

    def stop_all(self) -> None:
        """Stop every instance this factory made (idempotent)."""
        stop_in_parallel(self.instances)


@pytest.fixture(scope="session")
def keystone_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneFactory]:
    """Session-wide maker of real Keystones; every instance is stopped when the session ends."""
    factory = KeystoneFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()
