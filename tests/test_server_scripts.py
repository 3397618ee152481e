"""The start-up scripts users know: start_server.sh and start_dual_transport.py, run from another directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, ServerProcess, child_env

VENV = Path(sys.prefix)
needs_installed_venv = pytest.mark.skipif(
    not (VENV / "bin" / "ltmc").exists(),
    reason=f"start_server.sh needs a virtual environment with ltmc installed; {VENV} has none",
)


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No LTMC_DATA_DIR unless given: the script must pick the per-user default (under a scratch HOME). The HTTP
    port comes from the environment too: 0, the system picks one and the server logs it."""
    env = child_env(tmp_path / "unused", LTMC_VENV=str(VENV), LTMC_HTTP_PORT="0", HOME=str(tmp_path / "home"))
    for name in ("LTMC_DATA_DIR", "XDG_DATA_HOME"):
        env.pop(name, None)
    env.update(extra)
    return env


def start_script(tmp_path: Path, env: dict[str, str], *args: str) -> ServerProcess:
    cwd = tmp_path / "elsewhere"  # not the repository: the scripts must work from any directory
    cwd.mkdir(exist_ok=True)
    return ServerProcess([str(REPO / "start_server.sh"), *args], env, cwd / "server.log")


@needs_installed_venv
def test_start_server_sh_uses_absolute_default_paths_and_stops_cleanly(tmp_path: Path) -> None:
    server = start_script(tmp_path, script_env(tmp_path), "http")
    try:
        health = server.wait_healthy()
        expected = tmp_path / "home" / ".local" / "share" / "ltmc"
        if sys.platform == "darwin":
            expected = tmp_path / "home" / "Library" / "Application Support" / "ltmc"
        assert health["data_dir"] == str(expected)
        assert f"index {expected / 'faiss_index'}" in server.log()
        server.signal(signal.SIGTERM)  # the script exec'd ltmc: the signal reaches the server itself
        assert server.wait() == 0, server.log()
        assert (expected / "faiss_index.manifest.json").exists()
    finally:
        server.stop()


@needs_installed_venv
def test_start_server_sh_makes_relative_overrides_absolute(tmp_path: Path) -> None:
    env = script_env(tmp_path, LTMC_DATA_DIR="rel/data", FAISS_INDEX_PATH="my_index")
    server = start_script(tmp_path, env, "dual")
    try:
        data = tmp_path / "elsewhere" / "rel" / "data"
        assert server.wait_healthy()["data_dir"] == str(data)
        server.close_stdin()  # dual mode: stdin EOF stops it
        assert server.wait() == 0, server.log()
        assert (data / "my_index").exists() and not (tmp_path / "elsewhere" / "my_index").exists()
    finally:
        server.stop()


@needs_installed_venv
def test_start_server_sh_refuses_an_unusable_data_dir_and_a_bad_transport(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = script_env(tmp_path, LTMC_DATA_DIR=str(blocker / "data"))
    result = subprocess.run(
        [str(REPO / "start_server.sh"), "http"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 1 and f"start_server: cannot create directory {blocker / 'data'}" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [str(REPO / "start_server.sh"), "carrier-pigeon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "usage" in result.stderr


def test_start_dual_transport_py_with_the_system_python(tmp_path: Path, data_dir: Path) -> None:
    """`python start_dual_transport.py` with a Python lacking LTMC's dependencies (-S: no site-packages, like the
    system's) re-executes itself with the project's venv."""
    env = {k: v for k, v in child_env(data_dir, LTMC_VENV=str(VENV)).items() if k != "PYTHONPATH"}
    server = ServerProcess(
        [sys.executable, "-S", str(REPO / "start_dual_transport.py"), "--port", "0"], env, tmp_path / "server.log"
    )
    try:
        assert server.wait_healthy()["data_dir"] == str(data_dir)
        server.close_stdin()
        assert server.wait() == 0, server.log()
        assert "serving over dual" in server.log()
    finally:
        server.stop()


def test_scripts_stay_thin() -> None:
    for name in ("start_server.sh", "start_dual_transport.py", "fix_faiss_persistence.py"):
        lines = (REPO / name).read_text().splitlines()
        code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) < 60, f"{name} has {len(code)} lines of code"
        assert os.access(REPO / name, os.X_OK), f"{name} is not executable"
