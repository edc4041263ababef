"""The verdict on one answer, and the tally of a run: what must be zero, counted the same way
in CI and in the campaign.

* **dcorch 5xx**: a 5xx that dcorch made (the v1 API, a proxy, the DB-sync agent). A proxy
  relays the master's answers as they are, so a 5xx is the master's only when the simulated
  master itself failed during that input (it logs ``sim.handler_crashed``); every other 5xx from
  a proxy is dcorch's. The simulator's 5xx (relayed, or from its own dcdbsync routes) are
  counted apart as ``sim_5xx``: not dcorch's, but bugs of the reference servers all the same.
* **change on rejection**: the input was answered 4xx and a cheap snapshot of the database it
  could touch differs before and after.
* **lost**: the input was accepted (2xx) but what it promised is not stored: a proxied change
  with no work order, a created subcloud or record that cannot be read back.
* **secret in logs**: any log record, formatted with its traceback, holding the admin password,
  a user password or passphrase of the inputs (:data:`bench.fuzz.inputs.SECRET_PATTERN`) or a
  token issued during the run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Table, func, select

from dcorch.db import schema as dcorch_schema

MAX_EXAMPLES: Final = 5
"""Failures kept per kind for the report (the count is always exact)."""
PROBLEMS: Final = ("dcorch_5xx", "sim_5xx", "changed_on_rejection", "lost", "secret_logged", "hang")
"""Every kind of failure; the run fails when any count is not zero."""
MASTER_CRASH: Final = "sim.handler_crashed"
CHILD_CRASH: Final = "child.crashed"
"""What :mod:`actors` logs when a supervised child (a sync actor, a listener) fails."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one input (``status`` None: the connection closed without one)."""

    status: int | None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    error: str = ""
    """Why there is no status: ``closed`` by the server, ``timeout`` (a hang)."""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def describe(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        return f"{self.status} {self.body[:300]!r}"


@dataclass
class Verdict:
    """The checks' findings on one input."""

    answer: Answer
    problems: list[tuple[str, str]] = field(default_factory=list)
    """``(kind, detail)``; kind is one of :data:`PROBLEMS`."""

    def fail(self, kind: str, detail: str) -> None:
        self.problems.append((kind, detail))

    @property
    def rejected(self) -> bool:
        """Answered 4xx: nothing may have changed. (Without an answer the outcome is unknown: a
        complete request whose client half-closed is dropped by hypercorn, yet what it did is
        done, a v1 API change and its notice together.)"""
        status = self.answer.status
        return status is not None and 400 <= status < 500


def judge_5xx(answer: Answer, *, master_crashed: bool, simulator: bool = False) -> str | None:
    """Whose 5xx this is: ``dcorch_5xx``, or ``sim_5xx`` when the simulator answered it (its
    dcdbsync routes) or failed behind a proxy that relayed its answer; None below 500."""
    if answer.status is None or answer.status < 500:
        return None
    return "sim_5xx" if simulator or master_crashed else "dcorch_5xx"


# -- the log scan ---------------------------------------------------------------------------------


class LogScan(logging.Handler):
    """A handler on the root logger that counts records holding a secret (thread safe).

    Every record is formatted as a console handler would (message, then traceback) and searched
    for :attr:`pattern` and for each secret added with :meth:`add`. It also counts each crash the
    simulated master logs, which tells the proxies' relayed 5xx from their own, and each crash
    of a supervised child (a sync actor that an input's work order made fail, say): no 5xx
    shows those, yet they are the input's fault.
    """

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = pattern
        self._secrets: frozenset[str] = frozenset()
        self._guard = threading.Lock()
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.records = 0
        self.hits = 0
        self.examples: list[str] = []
        self.master_crashes = 0
        self.child_crashes: list[str] = []

    def add(self, secret: str) -> None:
        """Also look for ``secret`` (a token the run was issued); short strings are ignored."""
        if len(secret) >= 8:
            with self._guard:
                self._secrets = self._secrets | {secret}

    def emit(self, record: logging.LogRecord) -> None:
        text = self._formatter.format(record)
        found = self.pattern.search(text)
        leaked = found.group(0) if found else next((s for s in self._secrets if s in text), None)
        with self._guard:
            self.records += 1
            message = record.getMessage()
            if message.startswith(MASTER_CRASH):
                self.master_crashes += 1
            if message.startswith(CHILD_CRASH) and len(self.child_crashes) < MAX_EXAMPLES:
                self.child_crashes.append(text[:1500])
            elif message.startswith(CHILD_CRASH):
                self.child_crashes.append("")
            if leaked is not None:
                self.hits += 1
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(text.replace(leaked, "<SECRET>")[:500])

    def mark(self) -> tuple[int, int]:
        """``(hits, master crashes)`` so far, to compare after one input."""
        with self._guard:
            return self.hits, self.master_crashes


# -- database snapshots -------------------------------------------------------------------------


def _digest(rows: Iterable[Sequence[Any]]) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for row in rows:
        hasher.update(repr(tuple(row)).encode("utf-8", "surrogatepass"))
    return hasher.hexdigest()


def _count_and_max(conn: Connection, table: Table) -> tuple[int, int]:
    count, top = conn.execute(select(func.count(), func.max(table.c.id))).one()
    return int(count), int(top or 0)


def dcorch_snapshot(conn: Connection) -> tuple[Any, ...]:
    """A unit of work: what an input could change in dcorch's database, cheaply.

    Work (orch_job, orch_request) is only ever added by an input, so its row counts and top ids
    say whether any was (``resource`` rows are not: the engine maps what it syncs, an initial
    sync included); subclouds (with their endpoint types and URLs, kept in ``capabilities``)
    and their sync pairs are few, so the columns an input sets are digested. What the engine
    moves on its own (request states, sync and audit status, timestamps) is left out: it
    changes while a rejected input is answered.
    """
    s = dcorch_schema
    subclouds = conn.execute(
        select(
            s.subcloud.c.id,
            s.subcloud.c.region_name,
            s.subcloud.c.software_version,
            s.subcloud.c.management_state,
            s.subcloud.c.availability_status,
            s.subcloud.c.management_ip,
            s.subcloud.c.capabilities,
            s.subcloud.c.deleted,
        ).order_by(s.subcloud.c.id)
    ).all()
    pairs = conn.execute(
        select(
            s.subcloud_sync.c.id, s.subcloud_sync.c.subcloud_name, s.subcloud_sync.c.endpoint_type
        ).order_by(s.subcloud_sync.c.id)
    ).all()
    return (
        _count_and_max(conn, s.orch_job),
        _count_and_max(conn, s.orch_request),
        _digest(subclouds),
        _digest(pairs),
    )


def table_snapshot(tables: Sequence[Table]) -> Any:
    """A unit of work digesting every row of ``tables`` (the agent's keystone tables: a few
    hundred rows, so a whole digest per input stays in milliseconds)."""

    def unit(conn: Connection) -> tuple[tuple[str, int, str], ...]:
        found = []
        for table in tables:
            rows = sorted(conn.execute(select(table)).all(), key=repr)
            found.append((table.name, len(rows), _digest(rows)))
        return tuple(found)

    return unit


# -- the tally ----------------------------------------------------------------------------------


@dataclass
class SurfaceTally:
    """Counts for one surface."""

    inputs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    relayed_5xx: int = 0


@dataclass
class Tally:
    """Every input's verdict, by surface; the first few failures of each kind are kept."""

    surfaces: dict[str, SurfaceTally] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, surface: str, described: str, verdict: Verdict) -> None:
        tally = self.surfaces.setdefault(surface, SurfaceTally())
        tally.inputs += 1
        status = verdict.answer.status
        tally.statuses["none" if status is None else f"{status // 100}xx"] += 1
        if status is not None and status >= 500 and not verdict.problems:
            tally.relayed_5xx += 1
        for kind, detail in verdict.problems:
            tally.problems[kind] += 1
            kept = self.examples.setdefault(kind, [])
            if len(kept) < MAX_EXAMPLES:
                kept.append(f"{described}\n      -> {verdict.answer.describe()}: {detail}")

    @property
    def inputs(self) -> int:
        return sum(t.inputs for t in self.surfaces.values())

    def total(self, kind: str) -> int:
        return sum(t.problems[kind] for t in self.surfaces.values())

    @property
    def failed(self) -> bool:
        return any(self.total(kind) for kind in PROBLEMS)
