"""Settings: flags over environment over defaults, the same validation for both, sources recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltms.config import Settings
from ltms.errors import InvalidInput


def test_defaults_and_sources(tmp_path: Path) -> None:
    settings = Settings.load(env={"LTMC_DATA_DIR": str(tmp_path)})
    assert settings.embedder == "minilm"
    assert settings.http_host == "127.0.0.1" and settings.http_port == 5050
    assert settings.max_text_bytes == 32 * 1024 and settings.max_metadata_bytes == 16 * 1024
    assert settings.sources["http_port"] == "default"


def test_flag_beats_environment(tmp_path: Path) -> None:
    settings = Settings.load(env={"LTMC_DATA_DIR": str(tmp_path), "LTMC_HTTP_PORT": "6000"}, http_port=7000)
    assert settings.http_port == 7000
    assert settings.sources["http_port"] == "flag --port"
    assert Settings.load(env={"LTMC_DATA_DIR": str(tmp_path), "LTMC_HTTP_PORT": "6000"}).http_port == 6000


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"LTMC_HTTP_PORT": "70000"}, {}, "LTMC_HTTP_PORT='70000' is invalid: must be between 0 and 65535"),
        ({}, {"http_port": 70000}, "--port '70000' is invalid: must be between 0 and 65535"),
        ({"LTMC_READ_ONLY": "maybe"}, {}, "LTMC_READ_ONLY='maybe' is invalid"),
        ({"LTMC_EMBEDDER": "gpt"}, {}, "must be one of minilm, hash"),
        ({"LTMC_SNAPSHOT_QUIET_SECONDS": "-1"}, {}, "greater than 0"),
        ({"LTMC_MAX_TEXT_BYTES": "lots"}, {}, "LTMC_MAX_TEXT_BYTES='lots' is invalid"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], flags: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Settings.load(env={"LTMC_DATA_DIR": str(tmp_path), **env}, **flags)
    assert message in str(info.value)


def test_allowed_hosts_are_a_lowercase_list(tmp_path: Path) -> None:
    env = {"LTMC_DATA_DIR": str(tmp_path), "LTMC_ALLOWED_HOSTS": " Memory.Example.com, b.test ,"}
    settings = Settings.load(env=env)
    assert settings.allowed_hosts == ("memory.example.com", "b.test")


def test_diagnostics_hide_the_token(tmp_path: Path) -> None:
    settings = Settings.load(env={"LTMC_DATA_DIR": str(tmp_path), "LTMC_AUTH_TOKEN": "s3cret-token"})
    rows = {name: (value, source) for name, value, source in settings.diagnostics()}
    assert rows["auth_token"] == ("(set, hidden)", "environment LTMC_AUTH_TOKEN")
    assert all("s3cret-token" not in value for value, _ in rows.values())
