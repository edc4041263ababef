"""The package surface: layering, exports, errors and spec validation."""

from __future__ import annotations

import ast
import math
import pathlib
from collections.abc import Callable

import pytest
import trio

import actors
from actors import (
    ActorError,
    ActorNotFound,
    ActorSpec,
    ActorStopped,
    AskTimeout,
    Backoff,
    DuplicateActorName,
    MailboxFull,
    RestartIntensity,
    RestartIntensityExceeded,
    SupervisorSpec,
    TaskSpec,
)

from ._probes import probe

PACKAGE = pathlib.Path(actors.__file__).parent
FORBIDDEN = {"dcorch", "config", "quart", "quart_trio"}


def imported_modules(path: pathlib.Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_actors_never_imports_the_domain_or_the_web_stack() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 9
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    }
    assert offenders == set()


def test_the_import_walker_sees_forbidden_imports(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import dcorch.db\nfrom config import x\nfrom . import sibling\n")
    assert imported_modules(sample) == {"dcorch.db", "config"}


def test_all_is_a_tuple_of_existing_public_names() -> None:
    assert isinstance(actors.__all__, tuple)
    assert len(set(actors.__all__)) == len(actors.__all__)
    missing = [name for name in actors.__all__ if not hasattr(actors, name)]
    assert missing == []
    exported = {name for name in dir(actors) if not name.startswith("_")}
    submodules = {"errors"}
    assert exported - submodules == set(actors.__all__)


def test_error_hierarchy() -> None:
    for error in (
        ActorStopped,
        MailboxFull,
        AskTimeout,
        RestartIntensityExceeded,
        ActorNotFound,
        DuplicateActorName,
    ):
        assert issubclass(error, ActorError)
    assert issubclass(AskTimeout, trio.TooSlowError)
    assert not issubclass(ActorError, BaseException) or issubclass(ActorError, Exception)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: ActorSpec(name="a", factory=probe("a", []), mailbox_size=math.inf),  # type: ignore[arg-type]
            TypeError,
            "mailbox_size must be an int, got inf",
        ),
        (
            lambda: ActorSpec(name="a", factory=probe("a", []), mailbox_size=-1),
            ValueError,
            "mailbox_size must be >= 0, got -1",
        ),
        (
            lambda: ActorSpec(name="a/b", factory=probe("a", [])),
            ValueError,
            "name must be non-empty and must not contain '/', got 'a/b'",
        ),
        (
            lambda: TaskSpec(name="", fn=trio.sleep_forever),
            ValueError,
            "name must be non-empty and must not contain '/', got ''",
        ),
        (
            lambda: SupervisorSpec(name="s", shutdown_timeout=-1),
            ValueError,
            "shutdown_timeout must be >= 0 or None, got -1",
        ),
        (
            lambda: RestartIntensity(max_restarts=-1),
            ValueError,
            "max_restarts must be >= 0, got -1",
        ),
        (lambda: RestartIntensity(period=0), ValueError, "period must be > 0, got 0"),
        (lambda: Backoff(base=2, cap=1), ValueError, "base must be >= 0 and <= cap, got 2"),
        (lambda: Backoff(jitter=2), ValueError, "jitter must be between 0 and 1, got 2"),
    ],
)
def test_specs_reject_bad_values(
    build: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{__import__('re').escape(message)}$"):
        build()


def test_backoff_without_jitter_is_exactly_base_times_two_to_the_n_capped() -> None:
    import random

    backoff = Backoff(base=0.5, cap=6.0, jitter=0)
    delays = [backoff.delay(n, random.Random()) for n in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]
