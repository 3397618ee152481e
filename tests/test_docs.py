"""The README tells the truth about the settings: its configuration table lists every setting declared in
ltms/config.py with its real environment variable, flag and default (as sqlite-utils' tests/test_docs.py does for
its CLI), and `ltmc serve --help` shows the same defaults."""

from __future__ import annotations

import re

import pytest

from ltms.cli import main
from ltms.config import SETTINGS, Setting
from tests.helpers import REPO

# Rows of the table that are not Settings fields: paths (faiss_config), the scripts' venv, BLAS threads.
NOT_SETTINGS = {"LTMC_DATA_DIR", "FAISS_INDEX_PATH", "LTMC_VENV", "OMP_NUM_THREADS"}


def configuration_table() -> dict[str, tuple[str, str]]:
    """variable -> (flag, default) from the README's configuration table, backticks removed."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        variable = re.findall(r"`([^`]+)`", cells[0])[0]
        rows[variable] = (cells[1].strip("`"), cells[2].strip("`"))
    return rows


def test_the_table_was_found() -> None:
    assert len(configuration_table()) >= len(SETTINGS)


@pytest.mark.parametrize("spec", SETTINGS.values(), ids=lambda spec: spec.env)
def test_every_setting_is_in_the_readme_with_its_flag_and_default(spec: Setting) -> None:
    table = configuration_table()
    assert spec.env in table, f"{spec.env} ({spec.name}) is missing from the README's configuration table"
    flag, default = table[spec.env]
    assert flag == (spec.flag or ""), f"{spec.env}: the README says flag {flag!r}, the code {spec.flag!r}"
    assert default == spec.shown_default, (
        f"{spec.env}: the README says {default!r}, the default is {spec.shown_default!r}"
    )


def test_the_readme_lists_no_setting_that_does_not_exist() -> None:
    declared = {spec.env for spec in SETTINGS.values()}
    extra = set(configuration_table()) - declared - NOT_SETTINGS
    assert not extra, f"the README documents settings the code does not have: {sorted(extra)}"


def test_serve_help_shows_each_flag_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for spec in SETTINGS.values():
        if spec.flag is not None and spec.name != "log_level":  # its default depends on the command (test_cli_*)
            assert f"{spec.flag} " in text and f"default: {spec.env} or {spec.shown_default})" in text, spec.flag
    assert "(default: stdio, or http when --host or --port is given)" in text
