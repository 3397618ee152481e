"""Load smoke test: bench/reliability/load.py with 2 clients for 1 second must finish with 0 errors and a clean
server shutdown. No timing assertions; the real figures (16 clients, 60 s) come from running the script itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.reliability.reliability_kit import run_script
from tests.helpers import REPO


def test_two_clients_for_a_second_without_an_error(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = run_script(
        [
            sys.executable,
            str(REPO / "bench" / "reliability" / "load.py"),
            "--clients",
            "2",
            "--seconds",
            "1",
            "--json",
            str(out),
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["calls"]["store_memory"] > 0 and figures["calls"]["retrieve_memory"] > 0
    assert figures["memories"] >= figures["calls"]["store_memory"]  # every acknowledged store is counted
    assert figures["shutdown_status"] == 0 and figures["tracebacks"] == 0
    assert "| clients | seconds | requests | req/s | errors |" in result.stdout


@pytest.mark.slow
def test_sixteen_clients_for_sixty_seconds_without_an_error(tmp_path: Path) -> None:
    """`pytest -m slow`: the README's load figure (16 clients, 60 s, hash embedder)."""
    out = tmp_path / "load.json"
    result = run_script(
        [
            sys.executable,
            str(REPO / "bench" / "reliability" / "load.py"),
            "--clients",
            "16",
            "--seconds",
            "60",
            "--json",
            str(out),
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0 and figures["shutdown_status"] == 0 and figures["tracebacks"] == 0
