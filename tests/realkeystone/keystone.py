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

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_PROJECT",
    "ADMIN_USER",
    "REGION",
    "KeystoneUnavailableError",
    "bootstrapped_db_template",
    "keystone_venv",
    "new_keystone_db",
    "sqlite_url",
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

MANAGE_TIMEOUT = 300.0
"""Upper bound for one keystone-manage call (normally 3 s; generous for a loaded 2-core box)."""


class KeystoneUnavailableError(RuntimeError):
    """The real Keystone tooling could not be installed, configured or started."""


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without OS_* (the CLI and keystone-manage read them) or PYTHONPATH.

    `keystone-manage bootstrap` takes OS_BOOTSTRAP_* and the CLI takes OS_AUTH_URL, OS_REGION_NAME
    and friends from the environment; a developer's shell must not change what a test talks to.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OS_") and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env.update(extra)
    return env


@functools.cache
def keystone_venv() -> Path:
    """The Keystone virtualenv, built by scripts/keystone-venv on first use (once per process).

    Raises KeystoneUnavailableError with the script's output when it cannot be built, so a
    missing registry fails the tests loudly instead of skipping them.
    """
    result = subprocess.run(
        [sys.executable, str(VENV_SCRIPT)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    if result.returncode != 0:
        raise KeystoneUnavailableError(
            f"{VENV_SCRIPT} failed with exit code {result.returncode}; it builds the real Keystone "
            f"from {REQUIREMENTS} and needs the package registry (set DCORCH_SKIP_KEYSTONE=1 to "
            f"skip the keystone-marked tests instead):\n{_tail(result.stderr)}"
        )
    venv = Path(result.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "keystone-manage").exists():
        raise KeystoneUnavailableError(f"{VENV_SCRIPT} printed {venv}, which has no keystone-manage")
    return venv


def sqlite_url(path: Path | str) -> str:
    """SQLAlchemy URL of a SQLite database file (absolute, so the cwd of Keystone does not matter)."""
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
        raise KeystoneUnavailableError(f"keystone-manage {args[0]} timed out after {timeout} s") from exc
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


@functools.cache
def bootstrapped_db_template() -> Path:
    """A Keystone 30 SQLite database, migrated and bootstrapped; copy it for a fresh Keystone.

    Built once per requirements set and cached on disk beside the venv (later runs cost nothing):
    `keystone-manage db_sync`, then `bootstrap` with user ADMIN_USER / ADMIN_PASSWORD in project
    ADMIN_PROJECT, region REGION and bcrypt rounds PASSWORD_HASH_ROUNDS. The identity endpoints
    it records point at a placeholder port; KeystoneInstance rewrites them to its own URL.
    Concurrent builders (several pytest processes) serialise on a lock; the file appears
    atomically, so a half-built template is never seen.
    """
    venv = keystone_venv()
    cache_dir = venv.parent / f"{venv.name}-db-templates"
    cache_dir.mkdir(parents=True, exist_ok=True)
    template = cache_dir / f"keystone-{_template_key()}.db"
    if template.exists():
        return template
    with (cache_dir / ".lock").open("w") as lock:
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
            placeholder = "http://127.0.0.1:5000/v3"
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


def _key_owner_args() -> list[str]:
    """keystone-manage's key setup wants an owner; the current user owns the test key repos."""
    return ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]


def _tail(text: str, lines: int = 40) -> str:
    """The last lines of some output, for error messages."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
