"""Real OpenStack Keystone 30.0.0 peers for tests: venv, database template, served instances.

dcorch's identity path is proven against a Keystone it did not write (issue 12). Keystone, the
`openstack` CLI and gunicorn live in their own virtualenv (scripts/keystone-venv, pinned by
tests/realkeystone/requirements.txt), never in the project's .venv: they pin SQLAlchemy 2.1,
eventlet and oslo.*. Everything here is synchronous and drives those tools as subprocesses, so it
works from plain pytest fixtures and from trio tests alike (call it from a worker thread there).

Measured facts this module relies on are in docs shared with the team (real-keystone notes): each
`keystone-manage` call costs seconds of imports, so one migrated and bootstrapped database is
built once per requirements set and copied for every instance; bcrypt rounds are lowered to 4
before bootstrap because the default cost makes every password check ~300 ms.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_PROJECT",
    "ADMIN_USER",
    "REGION",
    "KeystoneInstance",
    "KeystoneUnavailableError",
    "OpenstackError",
    "add_region_endpoint",
    "bootstrapped_db_template",
    "keystone_venv",
    "new_keystone_db",
    "openstack",
    "openstack_run",
    "sqlite_url",
    "start_in_parallel",
    "stop_all",
    "stop_in_parallel",
]

ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
ADMIN_PASSWORD = "dcorch-test-admin-password"
REGION = "RegionOne"
PASSWORD_HASH_ROUNDS = 4
"""bcrypt cost for test Keystones: 4 keeps a password check at about a millisecond."""

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
VENV_SCRIPT = HERE.parent.parent / "scripts" / "keystone-venv"
DB_FILENAME = "keystone.db"
TEMPLATE_IDENTITY_URL = "http://127.0.0.1:5000/v3"
"""The identity endpoint URL recorded by bootstrap; each instance rewrites it to its own."""

MANAGE_TIMEOUT = 300.0
"""Upper bound for one keystone-manage call (normally 3 s; generous for a loaded 2-core box)."""


class KeystoneUnavailableError(RuntimeError):
    """The real Keystone tooling could not be installed, configured or started."""


def clean_env(*, keep_proxies: bool = False, **extra: str) -> dict[str, str]:
    """The caller's environment without OS_*, proxies or PYTHONPATH, plus extra.

    `keystone-manage bootstrap` takes OS_BOOTSTRAP_* and the CLI takes OS_AUTH_URL, OS_REGION_NAME
    and friends from the environment; a developer's shell must not change what a test talks to.
    keep_proxies is for pip, which may need the proxy to reach the package registry.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OS_")
        and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        and (keep_proxies or not key.lower().endswith("_proxy"))  # loopback needs no proxy
    }
    env.update(extra)
    return env


_venv_lock = threading.Lock()
_venv_outcome: Path | KeystoneUnavailableError | None = None


def keystone_venv() -> Path:
    """The Keystone virtualenv, built by scripts/keystone-venv on first use (once per process).

    Raises KeystoneUnavailableError with the script's output when it cannot be built, so a
    missing registry fails the tests loudly instead of skipping them. A failure is remembered
    for the rest of the process: every later caller gets the same error at once instead of
    waiting for another doomed install.
    """
    global _venv_outcome
    with _venv_lock:
        if _venv_outcome is None:
            _venv_outcome = _build_venv()
        if isinstance(_venv_outcome, KeystoneUnavailableError):
            raise _venv_outcome
        return _venv_outcome


def _build_venv() -> Path | KeystoneUnavailableError:
    """Run scripts/keystone-venv; its path, or the error to raise."""
    result = subprocess.run(
        [sys.executable, str(VENV_SCRIPT)],
        capture_output=True,
        text=True,
        env=clean_env(keep_proxies=True),
        check=False,
    )
    if result.returncode != 0:
        return KeystoneUnavailableError(
            f"{VENV_SCRIPT} failed with exit code {result.returncode}; it builds the real Keystone "
            f"from {REQUIREMENTS} and needs the package registry (set DCORCH_SKIP_KEYSTONE=1 to "
            f"skip the keystone-marked tests instead):\n{_tail(result.stderr)}"
        )
    venv = Path(result.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "keystone-manage").exists():
        return KeystoneUnavailableError(f"{VENV_SCRIPT} printed {venv}, lacking keystone-manage")
    return venv


def sqlite_url(path: Path | str) -> str:
    """SQLAlchemy URL of a SQLite database file (absolute: Keystone's cwd must not matter)."""
    return f"sqlite:///{Path(path).absolute()}"


def render_keystone_conf(
    db_url: str,
    fernet_keys: Path,
    credential_keys: Path,
    *,
    cache: bool = False,
    log_file: Path | None = None,
) -> str:
    """keystone.conf for a test Keystone: fernet tokens, fast bcrypt, optional in-memory cache.

    The cache makes a token validation ~3 ms instead of ~300 SQL statements, but an instance
    whose database is written behind its back (by a DB-sync agent) would serve stale entries,
    so it is off unless asked for.
    """
    lines = [
        "[DEFAULT]",
        "debug = false",
        *([f"log_file = {log_file}"] if log_file is not None else []),
        "",
        "[database]",
        f"connection = {db_url}",
        "",
        "[identity]",
        f"password_hash_rounds = {PASSWORD_HASH_ROUNDS}",
        "",
        "[token]",
        "provider = fernet",
        "",
        "[fernet_tokens]",
        f"key_repository = {fernet_keys}",
        "",
        "[fernet_receipts]",
        f"key_repository = {fernet_keys}",
        "",
        "[credential]",
        f"key_repository = {credential_keys}",
        "",
        "[cache]",
        f"enabled = {'true' if cache else 'false'}",
        *(["backend = dogpile.cache.memory", "expiration_time = 60"] if cache else []),
        "",
    ]
    return "\n".join(lines)


def keystone_manage(config_file: Path, *args: str, timeout: float = MANAGE_TIMEOUT) -> None:
    """Run `keystone-manage --config-file CONFIG ARGS...` from the venv; raise with its output."""
    command = [
        str(keystone_venv() / "bin" / "keystone-manage"),
        "--config-file",
        str(config_file),
        *args,
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=clean_env(PYTHONWARNINGS="ignore"),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KeystoneUnavailableError(f"keystone-manage {args[0]}: over {timeout} s") from exc
    if result.returncode != 0:
        raise KeystoneUnavailableError(
            f"keystone-manage {' '.join(args)} failed with exit code {result.returncode}:\n"
            f"{_tail(result.stdout + result.stderr)}"
        )


def _template_key() -> str:
    """What the template depends on: the pinned packages and the bootstrap parameters."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{ADMIN_USER}:{ADMIN_PROJECT}:{ADMIN_PASSWORD}:{REGION}".encode())
    digest.update(f"rounds={PASSWORD_HASH_ROUNDS}:v1".encode())
    return digest.hexdigest()[:12]


_template_lock = threading.Lock()


def bootstrapped_db_template() -> Path:
    """A Keystone 30 SQLite database, migrated and bootstrapped; copy it for a fresh Keystone.

    Built once per requirements set and cached on disk beside the venv (later runs cost nothing):
    `keystone-manage db_sync`, then `bootstrap` with user ADMIN_USER / ADMIN_PASSWORD in project
    ADMIN_PROJECT, region REGION and bcrypt rounds PASSWORD_HASH_ROUNDS. The identity endpoints
    it records point at a placeholder port; KeystoneInstance rewrites them to its own URL.
    Concurrent builders (several pytest processes) serialise on a lock; the file appears
    atomically, so a half-built template is never seen.
    """
    global _template_failure
    if _template_failure is not None:
        raise _template_failure
    try:
        return _build_template()
    except KeystoneUnavailableError as exc:
        _template_failure = exc  # a broken install stays broken for this process: fail fast
        raise


_template_failure: KeystoneUnavailableError | None = None


def _build_template() -> Path:
    """Build the template unless it is on disk already (see bootstrapped_db_template)."""
    venv = keystone_venv()
    cache_dir = venv.parent / f"{venv.name}-db-templates"
    template = cache_dir / f"keystone-{_template_key()}.db"
    if template.exists():
        return template
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _template_lock, (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if template.exists():
            return template
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache_dir) as scratch:
            work = Path(scratch)
            db = work / DB_FILENAME
            conf = work / "keystone.conf"
            conf.write_text(
                render_keystone_conf(sqlite_url(db), work / "fernet-keys", work / "credential-keys")
            )
            keystone_manage(conf, "db_sync")
            # bootstrap refuses to run without fernet keys; these are thrown away with the scratch
            # directory (every instance makes its own)
            keystone_manage(conf, "fernet_setup", *_key_owner_args())
            placeholder = TEMPLATE_IDENTITY_URL
            keystone_manage(
                conf,
                "bootstrap",
                "--bootstrap-username",
                ADMIN_USER,
                "--bootstrap-password",
                ADMIN_PASSWORD,
                "--bootstrap-project-name",
                ADMIN_PROJECT,
                "--bootstrap-role-name",
                "admin",
                "--bootstrap-service-name",
                "keystone",
                "--bootstrap-region-id",
                REGION,
                "--bootstrap-admin-url",
                placeholder,
                "--bootstrap-public-url",
                placeholder,
                "--bootstrap-internal-url",
                placeholder,
            )
            os.replace(db, template)
    return template


def new_keystone_db(dest: Path) -> Path:
    """A fresh Keystone database at dest (a file path, or a directory to hold keystone.db).

    Copies bootstrapped_db_template(); returns the database file's path.
    """
    target = dest / DB_FILENAME if dest.is_dir() else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bootstrapped_db_template(), target)
    return target


WSGI_SHIM = '''"""Keystone under gunicorn: oslo.config parses sys.argv, which holds gunicorn's."""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402
'''
"""The WSGI module each instance serves: without the argv reset the worker dies on import and is
respawned forever while clients hang on the accepted socket."""

START_TIMEOUT = 90.0
"""Default bound for one instance to answer GET /v3 (about 6 s alone, ~10 s for three at once)."""

STOP_TIMEOUT = 15.0
"""How long a gunicorn master gets after SIGTERM before its whole process group is killed."""

_running: set[KeystoneInstance] = set()
_running_lock = threading.Lock()


class KeystoneInstance:
    """One real Keystone served by gunicorn on 127.0.0.1 from its own directory.

    The directory holds keystone.conf, a database copied from bootstrapped_db_template(), its
    own fernet and credential key repositories, the WSGI shim, gunicorn's pid file and the logs;
    it is prepared on the first start() and kept across restart(), so data and port survive.
    Every running instance is also stopped at interpreter exit, so no gunicorn outlives the
    tests that started it.

    cache=True gives Keystone an in-memory cache (token validation ~3 ms instead of ~300 ms):
    right for a master only written through its API. Leave it off for an instance whose
    database a DB-sync agent writes directly, or it serves stale entries.
    """

    def __init__(
        self,
        root: Path,
        *,
        name: str = "keystone",
        cache: bool = False,
        port: int | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.name = name
        self.cache = cache
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<KeystoneInstance {self.name} {self.url} {state}>"

    # -- layout ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Unversioned root URL, e.g. http://127.0.0.1:41234 (the identity API is under /v3)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """The v3 identity URL clients authenticate at."""
        return f"{self.url}/v3"

    @property
    def db_path(self) -> Path:
        """This instance's SQLite database file (write it only while Keystone's cache is off)."""
        return self.root / DB_FILENAME

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of this instance's database."""
        return sqlite_url(self.db_path)

    @property
    def fernet_keys(self) -> Path:
        """This instance's fernet key repository (copy another's here to share tokens)."""
        return self.root / "fernet-keys"

    @property
    def credential_keys(self) -> Path:
        """This instance's credential key repository."""
        return self.root / "credential-keys"

    @property
    def config_file(self) -> Path:
        """keystone.conf, in the directory OS_KEYSTONE_CONFIG_DIR names."""
        return self.root / "keystone.conf"

    @property
    def log_file(self) -> Path:
        """gunicorn's and Keystone's log (what a failed start quotes)."""
        return self.root / "keystone.log"

    @property
    def pid_file(self) -> Path:
        """gunicorn's pid file: how stop() finds the master even without the Popen handle."""
        return self.root / "gunicorn.pid"

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the gunicorn master started by start() is alive."""
        return self._process is not None and self._process.poll() is None

    def prepare(self) -> None:
        """Lay out the directory once: database copy, key repositories, config, WSGI shim."""
        if self.config_file.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        new_keystone_db(self.db_path)
        _rewrite_identity_endpoints(self.db_path, self.auth_url)
        self.config_file.write_text(
            render_keystone_conf(
                self.db_url,
                self.fernet_keys,
                self.credential_keys,
                cache=self.cache,
                log_file=self.log_file,
            )
        )
        make_key_repositories(self.fernet_keys, self.credential_keys)
        (self.root / "keystone_wsgi.py").write_text(WSGI_SHIM)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Serve on self.port and return once GET /v3 answers; raise with the log tail if not."""
        if self.running:
            return
        self.prepare()
        self.pid_file.unlink(missing_ok=True)
        command = [
            str(keystone_venv() / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--timeout",
            "120",
            "--graceful-timeout",
            "5",
            "--no-control-socket",
            "--pid",
            str(self.pid_file),
            "--error-logfile",
            str(self.log_file),
            "--capture-output",
            "--chdir",
            str(self.root),
            "--name",
            f"keystone-{self.name}",
            "keystone_wsgi:application",
        ]
        env = clean_env(OS_KEYSTONE_CONFIG_DIR=str(self.root), PYTHONWARNINGS="ignore")
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills workers with it
            )
        with _running_lock:
            _running.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Poll GET /v3 (each try bounded: a broken worker accepts and never answers)."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise KeystoneUnavailableError(
                    f"Keystone {self.name} exited with code {code} while starting on {self.url}; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                with _DIRECT.open(self.auth_url, timeout=5) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise KeystoneUnavailableError(
            f"Keystone {self.name} did not answer GET {self.auth_url} within {timeout} s "
            f"(last: {last_error}); log {self.log_file}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop gunicorn and all its workers; afterwards no process of this instance remains."""
        process = self._process
        pid = process.pid if process is not None else _read_pid(self.pid_file)
        if pid is not None:
            _terminate_group(pid, process)
        self._process = None
        self.pid_file.unlink(missing_ok=True)
        with _running_lock:
            _running.discard(self)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same port with the same database and keys."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The end of this instance's log."""
        try:
            return _tail(self.log_file.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return "(no log written)"

    # -- API --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: object | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], Any]:
        """One call to this Keystone's API: (status, headers, parsed JSON body or None).

        Errors are returned, not raised, so tests can check Keystone's own answer to bad input.
        """
        return http_json(
            method, self.url + path, token=token, body=body, headers=headers, timeout=timeout
        )

    def validate_token(self, subject: str, *, token: str | None = None) -> tuple[int, Any]:
        """GET /v3/auth/tokens for subject, as this instance's admin: (status, body).

        200 means this Keystone accepts a token (possibly issued elsewhere); Keystone answers
        404 for a token it cannot decrypt or whose user or project it does not have.
        """
        status, _, payload = self.request(
            "GET",
            "/v3/auth/tokens",
            token=token or self.admin_token(),
            headers={"X-Subject-Token": subject},
        )
        return status, payload

    def pids(self) -> list[int]:
        """Processes of this instance alive now: the gunicorn master and its workers (Linux)."""
        process = self._process
        group = process.pid if process is not None else _read_pid(self.pid_file)
        return [] if group is None else _process_group_members(group)

    def issue_token(
        self,
        user: str = ADMIN_USER,
        password: str = ADMIN_PASSWORD,
        project: str | None = ADMIN_PROJECT,
        *,
        domain: str = "Default",
    ) -> str:
        """A fresh token for user (scoped to project unless None); raise if Keystone refuses."""
        auth: dict[str, object] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": domain}, "password": password}
                },
            }
        }
        if project is not None:
            auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
        status, headers, payload = self.request("POST", "/v3/auth/tokens", body={"auth": auth})
        token = headers.get("x-subject-token")
        if status != 201 or token is None:
            raise KeystoneUnavailableError(
                f"{self.name}: token for {user} refused: HTTP {status} {payload}"
            )
        return token

    def admin_token(self) -> str:
        """A fresh project-scoped token of the bootstrap admin."""
        return self.issue_token()


KEY_SETUP = """
import sys
from keystone.common.fernet_utils import FernetUtils

for repository, group in (sys.argv[1], "fernet_tokens"), (sys.argv[2], "credential"):
    keys = FernetUtils(repository, 3, group)
    keys.create_key_directory()
    keys.initialize_key_repository()
"""
"""What `keystone-manage fernet_setup` and `credential_setup` do (Keystone's own FernetUtils),
for both repositories in one interpreter: ~1.4 s instead of two ~4 s keystone-manage runs, which
matters when three instances start at once on two cores."""


def make_key_repositories(fernet_keys: Path, credential_keys: Path) -> None:
    """Create fresh fernet-token and credential key repositories (keys 0 and 1 in each)."""
    result = subprocess.run(
        [
            str(keystone_venv() / "bin" / "python"),
            "-c",
            KEY_SETUP,
            str(fernet_keys),
            str(credential_keys),
        ],
        capture_output=True,
        text=True,
        env=clean_env(PYTHONWARNINGS="ignore"),
        timeout=MANAGE_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 or not (fernet_keys / "1").exists():
        raise KeystoneUnavailableError(
            f"creating key repositories {fernet_keys}, {credential_keys} failed "
            f"(exit {result.returncode}):\n{_tail(result.stdout + result.stderr)}"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib without the environment's HTTP proxies: these calls are for loopback only."""


def http_json(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], Any]:
    """A JSON HTTP call with the standard library: (status, lower-cased headers, body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("X-Auth-Token", token)
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            status, answer, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer, raw = error.code, error.headers, error.read()
    lowered = {key.lower(): value for key, value in answer.items()}
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, lowered, payload


def start_in_parallel(
    instances: Iterable[KeystoneInstance], timeout: float = START_TIMEOUT
) -> list[KeystoneInstance]:
    """Start several instances at once (their imports overlap); all or none end up running."""
    chosen = list(instances)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        futures = [pool.submit(instance.start, timeout) for instance in chosen]
        concurrent.futures.wait(futures)
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        for instance in chosen:
            instance.stop()
        raise KeystoneUnavailableError(
            f"{len(errors)} of {len(chosen)} Keystones failed to start: "
            + "\n".join(str(error) for error in errors)
        )
    return chosen


def stop_all() -> None:
    """Stop every instance still running in this process (atexit runs it too)."""
    with _running_lock:
        running = list(_running)
    stop_in_parallel(running)


def stop_in_parallel(instances: Iterable[KeystoneInstance]) -> None:
    """Stop several instances at once (each takes about a second of graceful shutdown)."""
    chosen = list(instances)
    if not chosen:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        for future in [pool.submit(instance.stop) for instance in chosen]:
            future.result()


atexit.register(stop_all)


def add_region_endpoint(
    instance: KeystoneInstance,
    region: str,
    identity_url: str,
    *,
    token: str | None = None,
) -> list[str]:
    """Create region (if absent) with public, internal and admin identity endpoints at identity_url.

    Pointing region SystemController at the dcorch identity proxy makes every identity call of
    `openstack --os-region-name SystemController` go through the proxy, while the CLI still
    authenticates at the instance itself. identity_url is recorded as given (include /v3 if the
    proxy serves the API there). Returns the ids of the three endpoints.
    """
    token = token or instance.admin_token()
    status, _, payload = instance.request(
        "POST", "/v3/regions", token=token, body={"region": {"id": region}}
    )
    if status not in (201, 409):
        raise KeystoneUnavailableError(f"creating region {region}: HTTP {status} {payload}")
    status, _, payload = instance.request("GET", "/v3/services?type=identity", token=token)
    services = payload.get("services", []) if status == 200 else []
    if len(services) != 1:
        raise KeystoneUnavailableError(f"expected one identity service: HTTP {status} {payload}")
    ids = []
    for interface in ("public", "internal", "admin"):
        endpoint = {
            "service_id": services[0]["id"],
            "interface": interface,
            "region_id": region,
            "url": identity_url,
        }
        status, _, payload = instance.request(
            "POST", "/v3/endpoints", token=token, body={"endpoint": endpoint}
        )
        if status != 201:
            raise KeystoneUnavailableError(
                f"creating {interface} endpoint of {region}: HTTP {status} {payload}"
            )
        ids.append(payload["endpoint"]["id"])
    return ids


class OpenstackError(KeystoneUnavailableError):
    """The openstack CLI exited non-zero; stderr carries the reason it printed."""

    def __init__(self, command: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"openstack {' '.join(command)} exited {result.returncode}:\n"
            f"{_tail(result.stderr or result.stdout)}"
        )


CLI_TIMEOUT = 120.0
"""Bound for one openstack CLI call (~1.2 s start-up; generous for a loaded 2-core box)."""

_FORMATTABLE_ACTIONS = {"create", "show", "list", "issue"}
"""CLI actions that print a result and accept -f json; set/delete/add/remove print nothing."""


def openstack_run(
    target: KeystoneInstance | str,
    *args: str,
    region: str | None = None,
    user: str = ADMIN_USER,
    password: str = ADMIN_PASSWORD,
    project: str | None = ADMIN_PROJECT,
    token: str | None = None,
    domain: str = "Default",
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run the venv's real `openstack` CLI once, as given; the caller inspects the result.

    target is an instance or an auth URL (unversioned or ending in /v3). The environment is
    scrubbed of OS_* so only these arguments decide what it talks to. With region set, the CLI
    sends identity calls to that region's identity endpoint (add_region_endpoint) while still
    authenticating at target. token switches to token authentication (password is ignored).
    """
    auth_url = target.auth_url if isinstance(target, KeystoneInstance) else _v3(target)
    command = ["--os-auth-url", auth_url, "--os-identity-api-version", "3"]
    if token is not None:
        command += ["--os-auth-type", "v3token", "--os-token", token]
    else:
        command += [
            "--os-auth-type",
            "password",
            "--os-username",
            user,
            "--os-password",
            password,
            "--os-user-domain-name",
            domain,
        ]
    if project is not None:
        command += ["--os-project-name", project, "--os-project-domain-name", domain]
    if region is not None:
        command += ["--os-region-name", region]
    command += list(args)
    try:
        return subprocess.run(
            [str(keystone_venv() / "bin" / "openstack"), *command],
            capture_output=True,
            text=True,
            env=clean_env(PYTHONWARNINGS="ignore"),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KeystoneUnavailableError(
            f"openstack {' '.join(args)} did not finish within {timeout} s"
        ) from exc


def openstack(
    target: KeystoneInstance | str,
    *args: str,
    region: str | None = None,
    user: str = ADMIN_USER,
    password: str = ADMIN_PASSWORD,
    project: str | None = ADMIN_PROJECT,
    token: str | None = None,
    domain: str = "Default",
    timeout: float = CLI_TIMEOUT,
) -> Any:
    """Run the real `openstack` CLI and return its parsed JSON output; raise OpenstackError.

    `-f json` is added for actions that print a result (create, show, list, issue) unless args
    already choose a format; for the others (set, delete, add, remove) the result is None.
    Same arguments as openstack_run.
    """
    wants_json = bool(_FORMATTABLE_ACTIONS.intersection(_leading_words(args))) and not (
        {"-f", "--format"}.intersection(args)
    )
    full = [*args, "-f", "json"] if wants_json else list(args)
    result = openstack_run(
        target,
        *full,
        region=region,
        user=user,
        password=password,
        project=project,
        token=token,
        domain=domain,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise OpenstackError(full, result)
    if not wants_json:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise OpenstackError(full, result) from exc


def _leading_words(args: Sequence[str]) -> list[str]:
    """The command words before the first option: ("user", "create") of user create --x y."""
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


def _v3(url: str) -> str:
    """url with /v3 appended unless it already ends so."""
    url = url.rstrip("/")
    return url if url.endswith("/v3") else f"{url}/v3"


def _rewrite_identity_endpoints(db: Path, identity_url: str) -> None:
    """Point the catalog's bootstrap identity endpoints at this instance (the CLI follows them)."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE endpoint SET url = ? WHERE url = ?", (identity_url, TEMPLATE_IDENTITY_URL)
        )


def _read_pid(pid_file: Path) -> int | None:
    """The pid in gunicorn's pid file, if there is one."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _terminate_group(pid: int, process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the gunicorn master, wait, then SIGKILL its whole process group (the workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
    else:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        process.wait()


def _process_group_members(group: int) -> list[int]:
    """Pids whose process group is group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return sorted(members)


def _alive(pid: int) -> bool:
    """True while a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _key_owner_args() -> list[str]:
    """keystone-manage's key setup wants an owner; the current user owns the test key repos."""
    return ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]


def _tail(text: str, lines: int = 40) -> str:
    """The last lines of some output, for error messages."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
