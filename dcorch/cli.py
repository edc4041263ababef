"""The ``dcorch`` command: ``serve``, ``db upgrade|revision``, ``config``, ``dbsync`` and ``bench``.

Subcommands import heavy modules: ``dcorch config``/``db`` start fast; a broken part stops no other.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dcorch.settings import Settings, SettingsError, load_settings, settings_as_dict

_SECRET_NAME_ENDINGS = ("password", "passwd", "secret", "token", "key")
"""A setting whose name ends with one of these (``password``, ``api_key``) holds a secret value.

Only the ending counts: ``keystone_url`` and ``token_cache_ttl`` merely mention a secret word and
must stay readable, or ``dcorch config`` cannot show what the service will connect to.
"""
MASK = "******"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcorch", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: config/dcorch.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service until Ctrl-C")
    serve.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    serve.add_argument(
        "--subclouds", type=int, help="simulated subclouds (overrides sim.subclouds)"
    )
    serve.add_argument(
        "--upgrade-db", action="store_true", help="create or upgrade the database schema first"
    )

    db = commands.add_parser("db", help="database schema commands")
    db.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    db.add_argument("action", choices=["upgrade", "revision"])

    config = commands.add_parser(
        "config", help="print the effective settings and every URL used (secrets masked)"
    )
    config.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    dbsync = commands.add_parser(
        "dbsync", help="run the DB-sync agent beside a keystone (settings: [dbsync])"
    )
    dbsync.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    dbsync.add_argument("--host", help="listen address (overrides dbsync.host)")
    dbsync.add_argument("--port", type=int, help="listen port (overrides dbsync.port)")

    bench = commands.add_parser("bench", help="run the scale benchmarks")
    bench.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    bench.add_argument("--quick", action="store_true", help="cut-down run (under a minute)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the bench runner")
    return parser


def _masked(data: dict[str, Any]) -> dict[str, Any]:
    """Settings with named secrets and URL passwords masked; numbers, booleans, lists never are."""
    return {key: _masked_value(key, value) for key, value in data.items()}


def _masked_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return _masked(value)
    if not isinstance(value, str) or not value:
        return value
    if key.lower().endswith(_SECRET_NAME_ENDINGS):
        return MASK
    return _masked_url_password(value)


def _masked_url_password(value: str) -> str:
    """``scheme://user:******@host/...`` for a URL that carries a password (a database URL)."""
    parts = urlsplit(value)
    if not parts.scheme or parts.password is None:
        return value
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostinfo}"))


def _show_config(settings: Settings) -> int:
    """Print the settings and, under ``endpoints``, every URL the service would use.

    Settings that would stop start-up are still printed (that is what one debugs with), then the
    reason goes to stderr and the exit status is 1, as ``dcorch serve`` would fail.
    """
    from dcorch.remote.endpoints import describe_endpoints

    shown: dict[str, Any] = settings_as_dict(settings)
    problem = ""
    try:
        shown["endpoints"] = describe_endpoints(settings)
    except ValueError as exc:
        problem = str(exc)
        shown["endpoints"] = {"error": problem}
    print(json.dumps(_masked(shown), indent=2))
    if problem:
        print(f"dcorch: cannot start: {problem}", file=sys.stderr)
        return 1
    return 0


QUIETER_LOGGERS = {
    # One line per outbound HTTP call would drown the service's own events.
    "httpx": logging.WARNING,
    # Its DEBUG lines print every statement's parameters: the passwords and private keys that
    # work orders carry in resource_info (found by ./just fuzz at log_level DEBUG).
    "aiosqlite": logging.INFO,
}
"""Third-party loggers held above the service's level, whatever ``service.log_level`` says."""


def quiet_third_party_loggers() -> None:
    """Apply :data:`QUIETER_LOGGERS` (``dcorch serve`` does; so does the fuzz campaign)."""
    for name, level in QUIETER_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.service.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    quiet_third_party_loggers()
    from dcorch.proxy.redaction import RedactingFilter

    # Passwords, keys and tokens must never reach a log line, whoever logged them.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dcorch`` console script; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        if getattr(args, "subclouds", None) is not None:
            if not settings.sim.enabled:
                raise SettingsError("--subclouds sets sim.subclouds, but sim.enabled is false")
            settings = settings.replace(sim={"subclouds": args.subclouds})
    except SettingsError as exc:
        print(f"dcorch: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        return _show_config(settings)
    _configure_logging(settings)
    if args.command == "db":
        from dcorch.db import migrate

        if args.action == "upgrade":
            migrate.upgrade(settings.database_url)
        revision = migrate.current_revision(settings.database_url)
        print(f"database revision: {revision} (code head: {migrate.head_revision()})")
        return 0
    if args.command == "serve":
        from dcorch.serve import serve_forever

        status: int = serve_forever(settings, upgrade_db=args.upgrade_db)
        return status
    if args.command == "dbsync":
        from dcorch.dbsync.agent import serve_dbsync

        agent_status: int = serve_dbsync(settings, host=args.host, port=args.port)
        return agent_status
    if args.command == "bench":
        from bench.runner import main as bench_main

        bench_status: int = bench_main(settings, quick=args.quick, extra=list(args.bench_args))
        return bench_status
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts the choices


if __name__ == "__main__":
    sys.exit(main())
