"""The system under fuzz: the harness in a thread of its own, driven from a synchronous caller.

hypothesis drives synchronous functions, so the whole system (:func:`dcorch.harness.open_dcorch`
with its simulated clouds, and optionally the ``dcorch dbsync`` agent) runs in a trio loop on
another thread, and the caller sends inputs over real HTTP from its own thread. In the loop, as
well: a *spare* simulated cloud that dcorch does not manage, whose dcdbsync routes are fuzzed
and whose keystone validates the agent's callers (the agent needs no real keystone running,
only a keystone-schema database: a copy of the bootstrapped one ``tests/realkeystone`` builds
with ``keystone-manage``), and a probe face on the agent's database for snapshots.

Placeholders in an input (``{user:3}``, ``{subcloud:0}``, ``{token}``, ...; see
:mod:`bench.fuzz.inputs`) are filled in here, from the ids this run created.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import httpx
import trio
from sqlalchemy import Table

from bench.fuzz.checks import Answer, LogScan, dcorch_snapshot, table_snapshot
from bench.fuzz.inputs import CAP_BYTES, SECRET_PATTERN, HttpInput, RawInput
from dcorch import constants
from dcorch.cli import QUIETER_LOGGERS, quiet_third_party_loggers
from dcorch.db import open_database
from dcorch.db.database import Database
from dcorch.db.errors import SubcloudNotFound
from dcorch.db.rows import SubcloudRow
from dcorch.dbsync.agent import DbsyncAgent, async_database_url, open_dbsync_agent
from dcorch.dbsync.schema import reflect_keystone
from dcorch.harness import Dcorch, open_dcorch, register_subclouds
from dcorch.proxy.redaction import RedactingFilter
from dcorch.settings import Settings
from dcorch.sim import SimCloud

T = TypeVar("T")
PG_ADMIN: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
KEYSTONE_TABLES: Final = (
    "user",
    "local_user",
    "password",
    "user_option",
    "group",
    "user_group_membership",
    "project",
    "role",
    "assignment",
    "revocation_event",
)
"""What the agent may write: snapshotted before and after each of its inputs."""
HTTP_TIMEOUT: Final = 30.0
RAW_TIMEOUT: Final = 10.0
SETTLE_TIMEOUT: Final = 120.0
_PLACEHOLDER = re.compile(rb"\{([a-z][a-z_-]*)(?::(\d+))?\}")


def fuzz_settings(seed: int, database_url: str = "", subclouds: int = 2) -> Settings:
    """A small, fast system whose admin password is a secret the log scan knows.

    Bodies are capped at :data:`~bench.fuzz.inputs.CAP_BYTES` (the proxies' and the agent's
    ``max_body_bytes``), so oversized inputs cost kilobytes, not the default 64 MiB.
    """
    password = "FzPw-" + hashlib.sha256(f"admin-{seed}".encode()).hexdigest()[:12]
    return Settings().replace(
        sim={"subclouds": subclouds},
        master={"password": password},
        proxy={"max_body_bytes": CAP_BYTES},
        dbsync={"max_body_bytes": CAP_BYTES},
        engine={
            "safety_sweep_interval": 2.0,
            "offline_retry_interval": 0.5,
            "request_retry_backoff": 0.05,
            "request_retry_backoff_max": 0.5,
            "subcloud_http_timeout": 5.0,
        },
        actors={"restart_backoff": 0.05, "restart_backoff_max": 0.5},
        database={
            "url": database_url,
            "retry_backoff": 0.05,
            "retry_backoff_max": 1.0,
            "retry_attempts": 8,
        },
        service={"shutdown_timeout": 5.0},
    )


def _pg(sql: str) -> None:
    import psycopg

    with closing(psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10)) as conn:
        conn.execute(sql)


@contextmanager
def postgres_database(prefix: str = "dcorch_fuzz") -> Iterator[str]:
    """A private, empty PostgreSQL database (SQLAlchemy URL, asyncpg), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _pg(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _close_in_thread(cleanup: ExitStack) -> None:
    """Close ``cleanup`` (it drops a PostgreSQL database: blocking) even when cancelled.

    The agent stops by cancellation; unshielded, ``to_thread.run_sync`` raised at once and the
    database's context manager was left to the garbage collector, whose late ``DROP DATABASE``
    failed a later test that had stopped PostgreSQL.
    """
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(cleanup.close)


def keystone_database(directory: Path, postgres_url: str = "") -> str:
    """A fresh keystone 30 database, migrated and bootstrapped by keystone-manage.

    SQLite: a copy of the template ``tests/realkeystone`` caches (built once with the pinned
    keystone virtualenv, which ``scripts/keystone-venv`` makes from the package registry).
    PostgreSQL (``postgres_url``, an empty database): ``db_sync`` and ``bootstrap`` into it.
    """
    from tests.realkeystone import keystone as ks

    if not postgres_url:
        return ks.sqlite_url(ks.new_keystone_db(directory))
    url = postgres_url.replace("+asyncpg", "+psycopg2")
    conf = directory / "keystone.conf"
    fernet, credential = directory / "fernet-keys", directory / "credential-keys"
    conf.write_text(ks.render_keystone_conf(url, fernet, credential))
    ks.make_key_repositories(fernet, credential)
    ks.keystone_manage(conf, "db_sync")
    ks.keystone_manage(conf, "bootstrap", "--bootstrap-password", ks.ADMIN_PASSWORD)
    return url


@dataclass
class Registry:
    """Ids this run created, per kind, in creation order (what placeholders resolve to)."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, oid: str) -> None:
        found = self.ids.setdefault(kind, [])
        if oid and oid not in found:
            found.append(oid)

    def remove(self, kind: str, oid: str) -> None:
        with suppress(ValueError):
            self.ids.get(kind, []).remove(oid)

    def pick(self, kind: str, index: int) -> str:
        found = self.ids.get(kind)
        return found[index % len(found)] if found else f"{index:032x}"


@dataclass
class FuzzSystem:
    """The running system and what the caller's thread needs to drive it."""

    dc: Dcorch
    trio_token: trio.lowlevel.TrioToken
    nursery: trio.Nursery
    spare: str
    """The simulated cloud whose dcdbsync is fuzzed (dcorch does not manage it)."""
    scan: LogScan
    http: httpx.Client
    baseline: dict[str, SubcloudRow]
    registry: Registry = field(default_factory=Registry)
    tokens: list[str] = field(default_factory=list)
    """Tokens keystone issued to inputs (also in the secret scan)."""
    agent: DbsyncAgent | None = None
    agent_probe: Database | None = None
    agent_tables: tuple[Table, ...] = ()
    spare_token: str = ""

    # -- the loop ---------------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the system's loop and return its value."""
        return trio.from_thread.run(fn, *args, trio_token=self.trio_token)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``fn`` in the loop (the simulator's state lives there)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.trio_token)

    @property
    def admin_password(self) -> str:
        return self.dc.settings.master.password

    @property
    def regions(self) -> list[str]:
        return sorted(self.baseline)

    # -- the agent --------------------------------------------------------------------------

    def start_agent(self) -> None:
        """Start the DB-sync agent over a fresh keystone database (once), on the backend
        dcorch's database has (SQLite or PostgreSQL)."""
        if self.agent is not None:
            return
        directory = Path(tempfile.mkdtemp(prefix="dcorch-fuzz-keystone-"))
        with ExitStack() as stack:
            postgres = ""
            if self.dc.settings.database_url.startswith("postgresql"):
                postgres = stack.enter_context(postgres_database("dcorch_fuzz_keystone"))
            database_url = keystone_database(directory, postgres)
            self.call(self._start_agent, database_url, directory, stack.pop_all())

    async def _start_agent(self, database_url: str, directory: Path, cleanup: ExitStack) -> None:
        sim = self.dc.sim
        assert sim is not None
        keystone = sim.endpoints.subcloud_keystone(self.spare)
        settings = self.dc.settings.replace(
            dbsync={
                "keystone_database_url": database_url,
                "keystone_url": keystone,
                "max_body_bytes": CAP_BYTES,
            }
        )
        started = trio.Event()

        async def run() -> None:
            async with AsyncExitStack() as stack:
                stack.push_async_callback(_close_in_thread, cleanup)
                stack.callback(shutil.rmtree, directory, True)
                agent = await stack.enter_async_context(open_dbsync_agent(settings, port=0))
                probe = await stack.enter_async_context(
                    open_database(async_database_url(database_url), check_schema=False)
                )
                schema = await probe.run_readonly(reflect_keystone)
                self.agent, self.agent_probe = agent, probe
                self.agent_tables = tuple(schema.tables[name] for name in KEYSTONE_TABLES)
                started.set()
                await trio.sleep_forever()

        self.nursery.start_soon(run)
        await started.wait()

    # -- sending ----------------------------------------------------------------------------

    def base_url(self, target: str) -> str:
        dc = self.dc
        if target == "api":
            return dc.api_url
        if target in ("identity", "platform"):
            return dc.urls[target]
        if target == "dbsync-sim":
            assert dc.sim is not None
            return dc.sim.endpoints.subcloud_dcdbsync(self.spare)
        if target == "dbsync-agent":
            if self.agent is None:
                raise RuntimeError("the DB-sync agent is not running (start_agent)")
            return f"{self.agent.url}/v1.0"
        raise ValueError(f"unknown target {target!r}")

    def token_for(self, target: str, auth: str) -> str | None:
        if auth == "none":
            return None
        if auth == "bogus":
            return "gAAAAABfuzz-not-a-token"
        if target.startswith("dbsync"):
            return self.spare_token
        if auth == "issued" and self.tokens:
            return self.tokens[-1]
        return self.dc.token

    def resolve(self, data: bytes, target: str) -> bytes:
        """Fill in the placeholders of a path or body."""

        def one(match: re.Match[bytes]) -> bytes:
            kind = match.group(1).decode()
            index = int(match.group(2) or 0)
            if kind == "subcloud":
                return self.regions[index % len(self.regions)].encode()
            if kind == "admin_password":
                return self.admin_password.encode()
            if kind == "token":
                return (self.tokens[-1] if self.tokens else "no-token-yet").encode()
            if kind == "project":
                return b"admin"
            if kind == "iuser":
                return self.call_sync(self._iuser).encode()
            if kind == "certificate":
                return self.call_sync(self._certificate, index).encode()
            return self.registry.pick(kind, index).encode()

        return _PLACEHOLDER.sub(one, data)

    def _iuser(self) -> str:
        assert self.dc.sim is not None
        return str(self.dc.sim.master.platform.iuser["uuid"])

    def _certificate(self, index: int) -> str:
        assert self.dc.sim is not None
        found = sorted(self.dc.sim.master.platform.certificates)
        return found[index % len(found)] if found else str(uuid.UUID(int=index))

    def send(self, item: HttpInput) -> tuple[Answer, str]:
        """Send one well-framed request; the answer and the raw path that went out."""
        path = self.resolve(item.path.encode("utf-8", "surrogatepass"), item.target)
        body = self.resolve(item.body, item.target)
        headers = {k: self.resolve(v.encode(), item.target).decode() for k, v in item.headers}
        token = self.token_for(item.target, item.auth)
        if token is not None:
            headers["X-Auth-Token"] = token
        if item.content_type is not None:
            headers["Content-Type"] = item.content_type
        url = self.base_url(item.target) + path.decode("latin-1")
        try:
            request = self.http.build_request(item.method, url, content=body, headers=headers)
        except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeError) as exc:
            return Answer(None, error=f"unsent: {type(exc).__name__}"), ""
        sent = request.url.raw_path.decode("latin-1")
        try:
            response = self.http.send(request)
        except httpx.TimeoutException:
            return Answer(None, error="timeout"), sent
        except httpx.ConnectError as exc:
            return Answer(None, error=f"down: {type(exc).__name__}"), sent
        except (httpx.LocalProtocolError, UnicodeError) as exc:
            return Answer(None, error=f"unsent: {type(exc).__name__}"), sent
        except httpx.TransportError as exc:
            return Answer(None, error=f"closed: {type(exc).__name__}"), sent
        answer = Answer(response.status_code, response.content, tuple(response.headers.items()))
        return answer, sent

    def send_raw(self, item: RawInput) -> Answer:
        """Write the bytes to the listener's socket and read whatever answer comes back."""
        parts = urlsplit(self.base_url(item.target))
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        data = item.data.replace(b"HOST", f"{host}:{port}".encode())
        data = data.replace(b"TOKEN", (self.token_for(item.target, "admin") or "").encode())
        try:
            sock = socket.create_connection((host, port), timeout=RAW_TIMEOUT)
        except OSError as exc:
            return Answer(None, error=f"down: {type(exc).__name__}")
        with sock:
            try:
                sock.sendall(data)
                if item.half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before reading everything
            try:
                return _read_answer(sock)
            except TimeoutError:
                return Answer(None, error="timeout")
            except OSError as exc:
                return Answer(None, error=f"closed: {type(exc).__name__}")

    # -- state ------------------------------------------------------------------------------

    def snapshot(self, target: str) -> Any:
        """What the input's target could change (see :mod:`bench.fuzz.checks`)."""
        if target == "dbsync-sim":
            return self.call_sync(self._spare_digest)
        if target == "dbsync-agent":
            assert self.agent_probe is not None
            return self.call(self.agent_probe.run_readonly, table_snapshot(self.agent_tables))
        return self.call(self.dc.db.run_readonly, dcorch_snapshot)

    def _spare_digest(self) -> str:
        assert self.dc.sim is not None
        identity = self.dc.sim.subcloud(self.spare).identity
        state = {
            "tables": identity.tables,
            "revocations": identity.revocations,
            "assignments": sorted(map(repr, identity.assignments)),
        }
        text = json.dumps(state, sort_keys=True, default=repr)
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def proxied_outcomes(self) -> dict[str, float]:
        """``dcorch_proxied_commands_total`` by outcome (summed over endpoint types)."""

        def read() -> dict[str, float]:
            found: dict[str, float] = {}
            for labels, value in self.dc.metrics.proxied_commands.values.items():
                outcome = dict(labels).get("outcome", "")
                found[outcome] = found.get(outcome, 0.0) + value
            return found

        return self.call_sync(read)

    def subcloud(self, region: str) -> SubcloudRow | None:
        async def get() -> SubcloudRow | None:
            try:
                return await self.dc.db.get_subcloud(region)
            except SubcloudNotFound:
                return None

        return self.call(get)

    def restore_subclouds(self) -> None:
        """Back to the registered subclouds as they were (after an accepted v1 API change)."""
        self.call(self._restore)

    async def _restore(self) -> None:
        dc = self.dc
        manager = dc.sync_manager
        rows = {s.region_name: s for s in await dc.db.list_subclouds()}
        for region in rows.keys() - self.baseline.keys():
            await dc.db.delete_subcloud(region)
            if manager is not None:
                await manager.subcloud_deleted(region)
        for region, base in self.baseline.items():
            row = rows.get(region)
            if row is None:
                await register_subclouds(dc, [region])
                continue
            if row == base:
                continue
            await dc.db.update_subcloud(
                region,
                software_version=base.software_version,
                management_ip=base.management_ip,
                endpoints=base.endpoints.given(),
            )
            await dc.db.update_subcloud_states(
                region,
                management_state=base.management_state,
                availability_status=base.availability_status,
            )
            if manager is not None:
                await manager.subcloud_changed(region)
        await self._settle()

    async def _settle(self) -> None:
        """Wait until every registered subcloud has finished its initial sync again."""
        with trio.fail_after(SETTLE_TIMEOUT):
            while True:
                rows = await self.dc.db.list_subclouds()
                states = {s.region_name: s.initial_sync_state for s in rows}
                if all(states.get(r) == constants.INITIAL_SYNC_COMPLETED for r in self.baseline):
                    return
                await trio.sleep(0.05)

    def wait_converged(self, timeout: float) -> dict[str, list[str]]:
        """Let the engine finish; the differences left between master and subclouds.

        Per-user revocation events (a password change or a disable on the master makes one) are
        copied by the audit alone (docs/behaviour.md#audit), which the campaign does not run:
        its work would land while rejected inputs are being checked. Token revocations
        (``DELETE /v3/auth/tokens``, proxied) are checked like everything else.
        """

        def left(sim: SimCloud) -> dict[str, list[str]]:
            found = {
                region: [d for d in diffs if not _audit_only(d)]
                for region, diffs in sim.differences(self.regions).items()
            }
            return {region: diffs for region, diffs in found.items() if diffs}

        async def wait() -> dict[str, list[str]]:
            sim = self.dc.sim
            assert sim is not None
            deadline = trio.current_time() + timeout
            with trio.move_on_at(deadline):
                while left(sim):  # noqa: ASYNC110 - polls the simulator's state, no event for it
                    await trio.sleep(0.2)
            return left(sim)

        return self.call(wait)


def _audit_only(difference: str) -> bool:
    """A missing per-user revocation event (its key is b64 ``<user id>_<time>``)."""
    prefix = "revoke_events: missing "
    if not difference.startswith(prefix):
        return False
    key = difference.removeprefix(prefix).split(" ", 1)[0]
    try:
        user_event = base64.urlsafe_b64decode(key.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return "_" in user_event


def _read_answer(sock: socket.socket) -> Answer:
    """One HTTP/1.1 response from ``sock`` (status and body), or why there is none."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return Answer(None, error="closed") if not data else _parse_head(data, b"")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    answer = _parse_head(head, b"")
    length = int(answer.header("content-length") or 0)
    if answer.header("transfer-encoding") is None:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return Answer(answer.status, rest[:length] if length else rest, answer.headers)


def _parse_head(head: bytes, body: bytes) -> Answer:
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Answer(None, error=f"unparsable answer {lines[0][:60]!r}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
    return Answer(status, body, tuple(headers))


@contextmanager
def open_fuzz_system(settings: Settings) -> Iterator[FuzzSystem]:
    """Run the system in a thread until the block exits; the log scan is on meanwhile.

    The scan sees every record of the system's thread at DEBUG (third-party loggers held where
    ``dcorch serve`` holds them), through the :class:`~dcorch.proxy.redaction.RedactingFilter`
    that ``dcorch serve`` puts on its handlers; the caller's own records (its HTTP client's,
    hypothesis') are not the service's and are left out.
    """
    scan = LogScan(SECRET_PATTERN)
    scan.addFilter(RedactingFilter())
    caller = threading.get_ident()
    scan.addFilter(lambda record: record.thread != caller)
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIETER_LOGGERS)}
    root.addHandler(scan)
    root.setLevel(logging.DEBUG)
    quiet_third_party_loggers()  # as `dcorch serve` runs
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: list[trio.Event] = []

    async def main() -> None:
        try:
            async with open_dcorch(settings, ephemeral_ports=True) as dc:
                await dc.wait_converged(timeout=120)
                assert dc.sim is not None
                spare = dc.sim.add_subclouds(1)[0]
                baseline = {s.region_name: s for s in await dc.db.list_subclouds()}
                async with trio.open_nursery() as nursery:
                    stop.append(trio.Event())
                    system = FuzzSystem(
                        dc=dc,
                        trio_token=trio.lowlevel.current_trio_token(),
                        nursery=nursery,
                        spare=spare,
                        scan=scan,
                        http=httpx.Client(timeout=HTTP_TIMEOUT),
                        baseline=baseline,
                        spare_token=dc.sim.admin_token(spare),
                    )
                    await system._settle()  # every initial sync done: inputs meet a quiet engine
                    scan.add(dc.token)
                    scan.add(system.spare_token)
                    ready["system"] = system
                    started.set()
                    await stop[0].wait()
                    nursery.cancel_scope.cancel()
        except BaseException as exc:
            ready["error"] = exc
            started.set()
            raise

    thread = threading.Thread(target=lambda: trio.run(main), daemon=True, name="fuzz-system")
    thread.start()
    try:
        if not started.wait(300):
            raise RuntimeError("the system did not start within 300 s")
        if "error" in ready:
            raise RuntimeError("the system failed to start") from ready["error"]
        system: FuzzSystem = ready["system"]
        try:
            yield system
        finally:
            system.http.close()
            trio.from_thread.run_sync(stop[0].set, trio_token=system.trio_token)
            thread.join(60)
    finally:
        root.removeHandler(scan)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
