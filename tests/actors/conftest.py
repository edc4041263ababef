from __future__ import annotations

import pytest

from ._probes import Log


@pytest.fixture
def log() -> Log:
    return []
