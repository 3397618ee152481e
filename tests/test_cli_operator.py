"""Operator commands print their result and nothing else by default (-v adds the log), draw one progress bar on a
terminal that no log line runs into, count in correct plurals, and list the largest namespaces.

Each command runs as the real CLI in a child process on a real store; the terminal is a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltms.ops.stats import NAMESPACE_LIMIT
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m ltms ARGS` with no LTMC_LOG_LEVEL inherited (the defaults are under test)."""
    return subprocess.run(
        [sys.executable, "-m", "ltms", *args],
        env=child_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir.parent,
    )


def on_terminal(data_dir: Path, *args: str, timeout: float = 120) -> str:
    """Run `python -m ltms ARGS` with stdout and stderr on a pseudo-terminal; its exit status must be 0."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the command
        env = child_env(data_dir, COLUMNS="200")
        os.chdir(data_dir.parent)
        os.execve(sys.executable, [sys.executable, "-m", "ltms", *args], env)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        try:
            chunk = os.read(fd, 65536) if ready else b""
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            break
        output += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


def visible_lines(terminal_output: str) -> list[str]:
    """What stays on screen: for each line, the text after its last carriage return, escapes removed."""
    lines = terminal_output.split("\n")
    return [line.removesuffix("\r").rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in lines]


def build(data_dir: Path, count: int) -> None:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store_many([(f"memory number {i}", None, None, None) for i in range(count)])


def test_commands_print_their_result_in_correct_plurals_and_no_log(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"text": "the only memory"}) + "\n")
    # Before: INFO lines on stderr the README did not show, and "1 memories".
    result = run(data_dir, "import", str(source))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"imported 1, already present 0 (from {source}, 1 line)\n"
    result = run(data_dir, "reindex")
    assert (result.returncode, result.stderr) == (0, "") and result.stdout.startswith("reindexed 1 vector (")
    result = run(data_dir, "export", str(tmp_path / "out.jsonl"))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"exported 1 memory to {tmp_path / 'out.jsonl'}\n"
    result = run(data_dir, "stats")
    assert (result.returncode, result.stderr) == (0, "") and result.stdout.startswith("memories    1\n")


@pytest.mark.parametrize(
    ("args", "env", "level"),
    [
        (["doctor"], {}, "WARNING"),
        (["-v", "doctor"], {}, "INFO"),
        (["doctor", "-v"], {}, "INFO"),
        (["-vv", "doctor"], {}, "DEBUG"),
        (["doctor", "--log-level", "error"], {}, "ERROR"),
        (["doctor"], {"LTMC_LOG_LEVEL": "info"}, "INFO"),
        (["-v", "doctor"], {"LTMC_LOG_LEVEL": "error"}, "INFO"),  # a flag beats the environment
    ],
)
def test_the_log_level_of_operator_commands(data_dir: Path, args: list[str], env: dict[str, str], level: str) -> None:
    build(data_dir, 1)
    result = run(data_dir, *args, "--json", **env)
    settings = {row["name"]: row["value"] for row in json.loads(result.stdout)["settings"]}
    assert settings["log_level"] == level


def test_verbose_brings_the_log_back(data_dir: Path) -> None:
    build(data_dir, 2)
    result = run(data_dir, "-v", "stats")
    assert result.returncode == 0 and " INFO ltms.storage.embedded: loaded index snapshot" in result.stderr, (
        result.stderr
    )


def test_one_progress_bar_that_no_log_line_runs_into(data_dir: Path) -> None:
    build(data_dir, 300)
    # -v: the service logs while the bar is drawn. Before, the log line was appended to the bar's line and the
    # bar was drawn a second time below it.
    lines = visible_lines(on_terminal(data_dir, "-v", "reindex"))
    bars = [line for line in lines if line.startswith("indexing [")]
    assert len(bars) == 1 and "300/300" in bars[0], lines
    assert all(" INFO " not in line for line in bars), lines
    assert any(
        line.endswith(
            "INFO ltms.storage.embedded: built the index from " + str(data_dir / "ltmc.sqlite3") + ": 300 vectors"
        )
        for line in lines
    ), lines


def test_import_on_a_terminal_shows_one_bar_and_the_result(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"text": f"imported memory {i}"}) + "\n" for i in range(600)))
    lines = [line for line in visible_lines(on_terminal(data_dir, "import", str(source))) if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("embedding [########################] 100% 600/600"), lines
    assert lines[1] == f"imported 600, already present 0 (from {source}, 600 lines)"


def test_stats_lists_the_largest_namespaces_unless_asked_for_all(data_dir: Path) -> None:
    count = NAMESPACE_LIMIT + 5
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store_many([(f"m{j} in {i}", None, None, f"ns-{i:02d}") for i in range(count) for j in range(i + 1)])
    text = run(data_dir, "stats").stdout
    assert f"namespaces ({count}), the {NAMESPACE_LIMIT} largest (ltmc stats --all lists every one)" in text
    assert "ns-54" in text and "ns-04" not in text and "ns-05" in text
    everything = run(data_dir, "stats", "--all").stdout
    assert f"namespaces ({count})\n" in everything and "ns-00" in everything
    stats = json.loads(run(data_dir, "stats", "--json").stdout)
    assert (stats["namespace_count"], stats["namespaces_omitted"], len(stats["namespaces"])) == (count, 5, 50)
