"""Every key of ``config/dcorch.toml`` is read somewhere outside ``dcorch/settings.py``.

A setting nobody reads is a promise the service does not keep (an operator tunes it and nothing
changes). The check is static: in each module, a *section alias* is a name that holds a section
of the settings (a parameter annotated with its class, ``x = something.<section>``,
``x = <Section>Settings(...)``, ``self._x = alias``, or the section name itself in
``settings.<section>``); a key is read when some module reads ``<alias>.<key>`` for an alias of
that key's own section.
"""

from __future__ import annotations

import ast
import dataclasses
from collections import defaultdict
from pathlib import Path

from dcorch.settings import Settings

ROOT = Path(__file__).resolve().parents[1] / "dcorch"
SECTION_CLASSES = {
    type(getattr(Settings(), f.name)).__name__: f.name for f in dataclasses.fields(Settings)
}


def _tail(node: ast.expr) -> str | None:
    """``a.b.c`` -> ``c``; ``x`` -> ``x``; anything else -> None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _section_of(value: ast.expr, aliases: dict[str, set[str]]) -> set[str]:
    """Sections that the expression ``value`` holds (``a or b`` holds both sides')."""
    if isinstance(value, ast.BoolOp):
        return set().union(*(_section_of(v, aliases) for v in value.values))
    if isinstance(value, ast.Call) and _tail(value.func) in SECTION_CLASSES:
        return {SECTION_CLASSES[str(_tail(value.func))]}
    tail = _tail(value)
    if isinstance(value, ast.Attribute) and tail in SECTION_CLASSES.values():
        return {str(tail)}
    return set(aliases.get(str(tail), set())) if tail else set()


def field_aliases(tree: ast.Module) -> dict[str, set[str]]:
    """Class fields annotated with a section class (``settings: EngineSettings`` of a
    dataclass): ``<object>.settings`` holds that section in every module."""
    found: dict[str, set[str]] = defaultdict(set)
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    for name in ast.walk(node.annotation):
                        if isinstance(name, ast.Name) and name.id in SECTION_CLASSES:
                            found[node.target.id].add(SECTION_CLASSES[name.id])
    return found


def module_reads(
    tree: ast.Module, shared: dict[str, set[str]] | None = None
) -> set[tuple[str, str]]:
    """(section, key) pairs read in one module; ``shared``: aliases valid everywhere."""
    aliases: dict[str, set[str]] = defaultdict(set)
    for section in SECTION_CLASSES.values():
        aliases[section].add(section)
    for name, sections in (shared or {}).items():
        aliases[name] |= sections
    for _ in range(3):  # aliases of aliases (self._s = s; a = self._s)
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.annotation is not None:
                for ann in ast.walk(node.annotation):
                    tail = _tail(ann) if isinstance(ann, ast.Name | ast.Attribute) else None
                    if tail in SECTION_CLASSES:
                        aliases[node.arg].add(SECTION_CLASSES[str(tail)])
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is None:
                    continue
                found = _section_of(node.value, aliases)
                for target in targets:
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if (alias := _tail(t)) is not None:
                                aliases[alias] |= _section_of(v, aliases)
                    elif (alias := _tail(target)) is not None:
                        aliases[alias] |= found
    fields = {
        section: {f.name for f in dataclasses.fields(getattr(Settings(), section))}
        for section in SECTION_CLASSES.values()
    }
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (base := _tail(node.value)) is not None:
            for section in aliases.get(base, set()):
                if node.attr in fields[section]:
                    reads.add((section, node.attr))
    return reads


def all_reads() -> set[tuple[str, str]]:
    trees = [
        ast.parse(path.read_text(), str(path))
        for path in ROOT.rglob("*.py")
        if path.name != "settings.py"
    ]
    shared: dict[str, set[str]] = defaultdict(set)
    for tree in trees:
        for name, sections in field_aliases(tree).items():
            shared[name] |= sections
    reads: set[tuple[str, str]] = set()
    for tree in trees:
        reads |= module_reads(tree, shared)
    return reads


def test_every_setting_has_a_reader() -> None:
    keys = {
        (section, f.name)
        for section in SECTION_CLASSES.values()
        for f in dataclasses.fields(getattr(Settings(), section))
    }
    assert sorted(keys - all_reads()) == []


def test_the_check_finds_an_unread_key() -> None:
    """The static check itself: a read through an alias counts, a look-alike does not."""
    source = (
        "from dcorch.settings import ActorSettings, DatabaseSettings\n"
        "def f(dbs: DatabaseSettings, settings) -> None:\n"
        "    a = settings.actors\n"
        "    print(dbs.mailbox_size, a.restart_max)\n"
    )
    reads = module_reads(ast.parse(source))
    assert ("database", "mailbox_size") in reads
    assert ("actors", "restart_max") in reads
    assert ("actors", "mailbox_size") not in reads  # same key name, other section
