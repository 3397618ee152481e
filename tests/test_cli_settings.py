"""Every setting is declared once (ltms/config.py): its environment variable, parser and bounds, default, flag and
doc live on the Settings field, and loading, diagnostics, --help and the README all come from that declaration."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from ltms.config import SETTINGS, Setting, Settings
from ltms.errors import InvalidInput

# A valid value other than the default for each setting with a flag, as the flag gives it.
OTHER_VALUES = {
    "embedder": "hash",
    "read_only": True,
    "http_host": "::1",
    "http_port": "6001",
    "allow_insecure": True,
    "log_level": "error",
}


def test_every_field_is_a_declared_setting() -> None:
    names = {f.name for f in fields(Settings)} - {"paths", "sources"}
    assert names == set(SETTINGS)
    assert len({spec.env for spec in SETTINGS.values()}) == len(SETTINGS)
    assert all(spec.env.startswith("LTMC_") and spec.doc for spec in SETTINGS.values())


@pytest.mark.parametrize("spec", SETTINGS.values(), ids=lambda spec: spec.name)
def test_the_documented_default_is_a_valid_value_that_means_the_default(spec: Setting, tmp_path: Path) -> None:
    if spec.default is None or isinstance(spec.default, tuple):
        pytest.skip("shown as 'unset' / 'empty': the variable is left out")
    loaded = Settings.load(env={"LTMC_DATA_DIR": str(tmp_path), spec.env: spec.shown_default})
    assert getattr(loaded, spec.name) == spec.default
    assert loaded.sources[spec.name] == f"environment {spec.env}"


@pytest.mark.parametrize("spec", [s for s in SETTINGS.values() if s.flag], ids=lambda spec: spec.name)
def test_a_flag_beats_the_environment_and_is_named_by_its_real_option(spec: Setting, tmp_path: Path) -> None:
    env = {"LTMC_DATA_DIR": str(tmp_path)}
    if spec.name != "http_host":  # any host name parses; a bad one fails when the server binds
        with pytest.raises(InvalidInput, match=f"^{spec.flag} 'bogus value' is invalid: "):
            Settings.load(env=env, **{spec.name: "bogus value"})
    loaded = Settings.load(env={**env, spec.env: spec.shown_default}, **{spec.name: OTHER_VALUES[spec.name]})
    assert loaded.sources[spec.name] == f"flag {spec.flag}"
    assert getattr(loaded, spec.name) != spec.default


def test_operator_defaults_replace_the_declared_default_but_not_the_environment(tmp_path: Path) -> None:
    env = {"LTMC_DATA_DIR": str(tmp_path)}
    quiet = Settings.load(env=env, defaults={"log_level": "WARNING"})
    assert (quiet.log_level, quiet.sources["log_level"]) == ("WARNING", "default")
    assert Settings.load(env={**env, "LTMC_LOG_LEVEL": "debug"}, defaults={"log_level": "WARNING"}).log_level == "DEBUG"
    assert Settings.load(env=env).log_level == "INFO"


def test_only_settings_with_a_flag_take_one(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'max_text_bytes' is not a setting with a command-line flag"):
        Settings.load(env={"LTMC_DATA_DIR": str(tmp_path)}, max_text_bytes=5)
    with pytest.raises(TypeError, match="'nonsense' is not a setting"):
        Settings.load(env={"LTMC_DATA_DIR": str(tmp_path)}, nonsense=5)
