"""Settings: the TOML file, env overrides and the errors that stop start-up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from dcorch.cli import main
from dcorch.settings import (
    DEFAULT_CONFIG_PATH,
    Settings,
    SettingsError,
    load_settings,
    settings_as_dict,
)


def test_shipped_toml_lists_every_default_exactly() -> None:
    data = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())
    defaults = settings_as_dict(Settings())
    as_lists = {
        section: {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        for section, values in defaults.items()
    }
    assert data == as_lists


def test_every_toml_key_has_a_comment() -> None:
    for line in DEFAULT_CONFIG_PATH.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line.split("=", 1)[1], f"no comment on: {line}"


def test_file_and_environment_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[api]\nport = 9000\n[sim]\nsubclouds = 3\n"
        '[engine]\ndisable_audit_endpoints = ["identity"]\n'
    )
    settings = load_settings(
        path, environ={"DCORCH_SIM_SUBCLOUDS": "7", "DCORCH_SIM_ENABLED": "no"}
    )
    assert settings.api.port == 9000
    assert settings.sim.subclouds == 7
    assert settings.sim.enabled is False
    assert settings.engine.disable_audit_endpoints == ("identity",)
    assert settings.proxy.identity_port == 25000


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[api]\nprot = 9000\n")
    with pytest.raises(SettingsError, match=rf"^{re.escape(str(path))}: unknown key api.prot$"):
        load_settings(path, environ={})


def test_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[nope]\nx = 1\n")
    with pytest.raises(SettingsError, match=r"unknown section \[nope\]$"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[api]\nport = "x"\n', r"api.port must be an integer, got 'x'$"),
        ("[api]\nport = -1\n", r"api.port must be a non-negative integer, got -1$"),
        ("[sim]\nenabled = 1\n", r"sim.enabled must be a boolean, got 1$"),
        ("[engine]\naudit_interval = true\n", r"engine.audit_interval must be a number, got True$"),
        ("[database]\nurl = 3\n", r"database.url must be a string, got 3$"),
        ("[engine]\ndisable_audit_endpoints = [1]\n", r"must be a list of strings, got \[1\]$"),
        ("[api\n", r"invalid TOML"),
    ],
)
def test_bad_values_stop_loading(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(path, environ={})


def test_bad_environment_value_and_unknown_variable() -> None:
    with pytest.raises(SettingsError, match=r"^environment: api.port must be an integer"):
        load_settings(environ={"DCORCH_API_PORT": "eighty"})
    with pytest.raises(SettingsError, match=r"^environment: unknown setting DCORCH_NOPE_X$"):
        load_settings(environ={"DCORCH_NOPE_X": "1"})
    with pytest.raises(SettingsError, match=r"^environment: unknown key api.colour$"):
        load_settings(environ={"DCORCH_API_COLOUR": "1"})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"does not exist$"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_default_database_url_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    settings = Settings().replace(service={"data_dir": str(tmp_path)})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/dcorch.db"
    explicit = settings.replace(database={"url": "postgresql+asyncpg://root@127.0.0.1/x"})
    assert explicit.database_url == "postgresql+asyncpg://root@127.0.0.1/x"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.api.port = 1  # type: ignore[misc]


def test_cli_reports_a_bad_config_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[proxy]\nidentity_prot = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "dcorch.cli", "config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}: unknown key proxy.identity_prot" in done.stderr


def test_cli_config_masks_secret_values_but_not_urls_or_durations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dcorch.toml"
    path.write_text(
        "[database]\n"
        'url = "postgresql+asyncpg://dcorch:db-Secret-1@db.example:5432/dcorch"\n'
        "[sim]\nenabled = false\n"
        "[master]\n"
        'keystone_url = "http://controller:5000"\n'
        'password = "master-Secret-2"\n'
    )
    assert main(["config", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["master"]["keystone_url"] == "http://controller:5000"
    assert shown["proxy"]["token_cache_ttl"] == 30.0
    assert shown["proxy"]["identity_port"] == 25000
    assert shown["proxy"]["max_body_bytes"] == 64 * 1024 * 1024
    assert shown["master"]["username"] == "admin"
    assert shown["master"]["password"] == "******"
    assert shown["database"]["url"] == "postgresql+asyncpg://dcorch:******@db.example:5432/dcorch"


def _config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    """Run ``dcorch config`` on a file; returns the status, the printed JSON and stderr."""
    path = tmp_path / "dcorch.toml"
    path.write_text(text)
    status = main(["config", "--config", str(path)])
    out, err = capsys.readouterr()
    return status, json.loads(out), err


def test_cli_config_shows_every_url_of_a_keystone_only_master(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, shown, _ = _config(
        tmp_path,
        '[sim]\nenabled = false\n[master]\nkeystone_url = "http://u:Secret-3@controller:5000/v3"\n',
        capsys,
    )
    assert status == 0
    endpoints = shown["endpoints"]
    assert endpoints["master"] == {
        "keystone": "http://u:******@controller:5000/v3",
        "dbsync": "http://controller:8219/v1.0",  # derived, and shown as such
        "sysinv": "",
        "dcmanager": "",
        "usm": "",
    }
    assert endpoints["subcloud_template"] == {
        "keystone": "https://<management_ip>:5001/v3",
        "sysinv": "https://<management_ip>:6386/v1",
        "dcdbsync": "https://<management_ip>:8220/v1.0",
    }
    assert endpoints["sync_endpoint_types"] == ["identity"]
    notes = "\n".join(endpoints["notes"])
    assert "master.dbsync_url is empty" in notes
    assert "master.sysinv_url is empty: platform endpoint type off" in notes
    assert "master.dcmanager_url is empty" in notes
    assert "Secret-3" not in json.dumps(shown)


def test_cli_config_shows_configured_dbsync_and_subcloud_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, shown, _ = _config(
        tmp_path,
        "[sim]\nenabled = false\n[master]\n"
        'keystone_url = "https://ks.example:5000"\n'
        'dbsync_url = "http://db.example:9000/"\n'
        'sysinv_url = "https://ks.example:6385/v1"\n'
        'dcmanager_url = "https://ks.example:8119"\n'
        'usm_url = "https://ks.example:5497/"\n'
        '[subcloud]\nscheme = "http"\nkeystone_port = 15000\n',
        capsys,
    )
    assert status == 0
    endpoints = shown["endpoints"]
    assert endpoints["master"] == {
        "keystone": "https://ks.example:5000/v3",
        "dbsync": "http://db.example:9000/v1.0",
        "sysinv": "https://ks.example:6385/v1",
        "dcmanager": "https://ks.example:8119/v1.0",
        "usm": "https://ks.example:5497",
    }
    assert endpoints["subcloud_template"]["keystone"] == "http://<management_ip>:15000/v3"
    assert endpoints["subcloud_template"]["sysinv"] == "http://<management_ip>:6386/v1"
    assert endpoints["sync_endpoint_types"] == ["platform", "identity"]
    assert endpoints["notes"] == []
    assert shown["subcloud"]["keystone_port"] == 15000


def test_new_keys_come_from_the_environment_too() -> None:
    settings = load_settings(
        environ={
            "DCORCH_MASTER_DBSYNC_URL": "http://127.0.0.1:8219",
            "DCORCH_SUBCLOUD_SCHEME": "http",
            "DCORCH_SUBCLOUD_DCDBSYNC_PORT": "18220",
        }
    )
    assert settings.master.dbsync_url == "http://127.0.0.1:8219"
    assert settings.subcloud.scheme == "http"
    assert settings.subcloud.dcdbsync_port == 18220


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[master]\ndbsync_url = "http://127.0.0.1:8219"\n',
            "master.dbsync_url is set (http://127.0.0.1:8219) but sim.enabled is true",
        ),
        (
            "[subcloud]\nsysinv_port = 16386\n",
            "subcloud.sysinv_port is set (16386) but sim.enabled is true",
        ),
        ("[sim]\nenabled = false\n", "master.keystone_url must be set when sim.enabled is false"),
        (
            '[sim]\nenabled = false\n[master]\nkeystone_url = "controller:5000"\n',
            "master.keystone_url must be an absolute http(s) URL, got 'controller:5000'",
        ),
        (
            '[sim]\nenabled = false\n[master]\nkeystone_url = "http://ks:5000"\n'
            'dbsync_url = "ks:8219"\n',
            "master.dbsync_url must be an absolute http(s) URL",
        ),
        (
            '[sim]\nenabled = false\n[master]\nkeystone_url = "http://ks:5000"\n'
            '[subcloud]\nscheme = "ftp"\n',
            "subcloud.scheme must be http or https, got 'ftp'",
        ),
        (
            '[sim]\nenabled = false\n[master]\nkeystone_url = "http://ks:5000"\n'
            "[subcloud]\nkeystone_port = 70000\n",
            "subcloud.keystone_port must be a port (1-65535), got 70000",
        ),
    ],
)
def test_cli_config_says_why_settings_would_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    status, shown, err = _config(tmp_path, text, capsys)
    assert status == 1
    assert shown["endpoints"]["error"].startswith(message)
    assert err.startswith(f"dcorch: cannot start: {message}")


def test_serve_subclouds_flag_without_the_simulator_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dcorch.toml"
    path.write_text('[sim]\nenabled = false\n[master]\nkeystone_url = "http://ks:5000"\n')
    assert main(["--config", str(path), "serve", "--subclouds", "3"]) == 2
    assert "--subclouds sets sim.subclouds, but sim.enabled is false" in capsys.readouterr().err
