"""The import rules of docs/architecture.md, checked: the data path stays readable.

Each package may import only the packages listed for it; in particular the simulator is
imported by the test harness alone, nothing under the sync engine imports a proxy, and the
database never calls up into the engine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"dcorch.settings", "dcorch.constants", "dcorch.urls", "dcorch.text"}
ALLOWED: dict[str, set[str]] = {
    "dcorch.settings": set(),
    "dcorch.constants": set(),
    "dcorch.urls": set(),
    "dcorch.text": set(),
    "dcorch.work": BASE,
    "dcorch.supervision": BASE | {"actors"},
    "dcorch.asgi": BASE,
    "dcorch.metrics": BASE,
    "dcorch.proxy": BASE | {"dcorch.proxy", "dcorch.work", "dcorch.asgi", "dcorch.metrics"},
    "dcorch.api": BASE | {"dcorch.api", "dcorch.db", "dcorch.metrics", "dcorch.lifecycle"},
    "dcorch.lifecycle": BASE | {"dcorch.db", "dcorch.work"},
    "dcorch.rpc": BASE
    | {"dcorch.rpc", "dcorch.lifecycle", "dcorch.metrics", "dcorch.supervision", "actors"},
    "dcorch.db": BASE | {"dcorch.db", "dcorch.work", "dcorch.supervision", "actors"},
    "dcorch.remote": BASE | {"dcorch.remote", "dcorch.db.rows"},
    "dcorch.sync": BASE
    | {"dcorch.sync", "dcorch.db", "dcorch.remote", "dcorch.work", "dcorch.supervision"}
    | {"actors"},
    "dcorch.sim": BASE
    | {"dcorch.sim", "dcorch.asgi", "dcorch.db.rows", "dcorch.remote.endpoints"}
    | {"dcorch.remote.http", "dcorch.dbsync.contract"},
    "dcorch.dbsync.contract": {"dcorch.text"},
    "dcorch.dbsync": BASE
    | {"dcorch.dbsync", "dcorch.asgi", "dcorch.db", "dcorch.proxy.auth", "dcorch.proxy.errors"}
    | {"dcorch.remote.http"},
    "dcorch.service": BASE
    | {"dcorch.api", "dcorch.asgi", "dcorch.db", "dcorch.metrics", "dcorch.proxy"}
    | {"dcorch.remote", "dcorch.sync", "dcorch.supervision", "actors"}
    | {"dcorch.lifecycle", "dcorch.rpc"},
    "dcorch.harness": BASE
    | {"dcorch.service", "dcorch.sim", "dcorch.db", "dcorch.remote", "dcorch.sync"}
    | {"dcorch.metrics", "actors"},
    "dcorch.serve": BASE | {"dcorch.service", "dcorch.harness", "dcorch.db.errors"},
    "dcorch.cli": BASE
    | {"dcorch.serve", "dcorch.db", "dcorch.dbsync", "dcorch.proxy.redaction", "bench"}
    | {"dcorch.remote.endpoints"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every dcorch/actors module or package ``path`` imports (at any depth of the code)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if node.module == "dcorch" else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("dcorch", "actors", "bench")}


def _rule(module: str) -> tuple[str, set[str]]:
    for owner in sorted(ALLOWED, key=len, reverse=True):
        if module == owner or module.startswith(owner + "."):
            return owner, ALLOWED[owner]
    raise AssertionError(f"{module} has no import rule: add it to docs/architecture.md and here")


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "dcorch").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_module_imports_follow_the_rules(path: Path) -> None:
    module = _module_name(path)
    if module == "dcorch" or ".migrations" in module:
        return
    owner, allowed = _rule(module)
    bad = sorted(name for name in _imports(path) if not _allowed(name, allowed))
    assert bad == [], f"{module} ({owner}) may not import {bad}"


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The check itself: a sync module importing a proxy is refused."""
    path = tmp_path / "bad.py"
    path.write_text("from dcorch.proxy.errors import BodyTooLarge\nfrom dcorch.db import rows\n")
    names = _imports(path)
    assert names == {"dcorch.proxy.errors", "dcorch.db"}
    assert not _allowed("dcorch.proxy.errors", ALLOWED["dcorch.sync"])
    assert _allowed("dcorch.db", ALLOWED["dcorch.sync"])
