"""`ltmc serve` and `start_server.sh` share one default transport: stdio, or http when --host or --port is given;
options need no transport before them; --help shows the default; bad flags are named as typed."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from ltms.cli import STDIO_HINT, main
from tests.helpers import REPO, ServerProcess, child_env

VENV = Path(sys.prefix)


def serve(tmp_path: Path, command: list[str], env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(command, env or child_env(tmp_path / "data"), tmp_path / "server.log")


def test_serve_with_only_a_port_serves_http(tmp_path: Path) -> None:
    server = serve(tmp_path, [sys.executable, "-m", "ltms", "serve", "--port", "0"])  # the port is read from the log
    try:
        assert server.wait_healthy()["status"] == "ok"
        assert "serving over http" in server.log()
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
    finally:
        server.stop()


@pytest.mark.skipif(not (VENV / "bin" / "ltmc").exists(), reason=f"{VENV} has no ltmc installed")
def test_start_server_sh_takes_options_without_a_transport(tmp_path: Path) -> None:
    # Before: `start_server.sh --port 6000` was a usage error (the transport had to come first).
    env = child_env(tmp_path / "data", LTMC_VENV=str(VENV))
    server = serve(tmp_path, [str(REPO / "start_server.sh"), "--port", "0"], env)
    try:
        assert server.wait_healthy()["data_dir"] == str(tmp_path / "data")
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
    finally:
        server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("command", [["-m", "ltms", "serve"], ["start_server.sh"]])
async def test_with_no_arguments_both_serve_stdio(tmp_path: Path, command: list[str]) -> None:
    # Before: start_server.sh with no arguments started HTTP, and an agent that launched it waited for nothing.
    if command == ["start_server.sh"]:
        if not (VENV / "bin" / "ltmc").exists():
            pytest.skip(f"{VENV} has no ltmc installed")
        executable, args = str(REPO / "start_server.sh"), []
    else:
        executable, args = sys.executable, command
    env = child_env(tmp_path / "data", LTMC_VENV=str(VENV))
    async with Client(StdioServerParameters(command=executable, args=args, env=env, cwd=str(tmp_path))) as client:
        tools = (await client.list_tools()).tools
        assert len(tools) == 7


def test_serve_on_a_terminal_says_it_waits_for_a_stdio_client(tmp_path: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "ltms", "serve"], child_env(tmp_path / "data"))
    output = b""
    deadline = time.monotonic() + 60
    try:
        while STDIO_HINT.encode() not in output.replace(b"\r\n", b"") and time.monotonic() < deadline:
            if select.select([fd], [], [], deadline - time.monotonic())[0]:
                output += os.read(fd, 4096)
        assert STDIO_HINT.encode() in output.replace(b"\r\n", b""), output
        os.write(fd, b"\x04")  # Ctrl-D: end of input, which is how a stdio server is told to stop
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_no_hint_when_an_agent_starts_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ltms", "serve"],
        env=child_env(tmp_path / "data"),
        stdin=subprocess.DEVNULL,  # stdin closed at once: the server stops
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert STDIO_HINT not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "70000"], "ltmc: error: --port '70000' is invalid: must be between 0 and 65535"),
        (["serve", "--port", "many"], "ltmc: error: --port 'many' is invalid: must be a whole number between 0 and"),
    ],
)
def test_a_bad_flag_is_named_as_typed(
    args: list[str], message: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: `--port 70000` was reported as `--http-port 70000 is invalid`.
    monkeypatch.setenv("LTMC_DATA_DIR", str(data_dir))
    assert main(args) == 1
    assert capsys.readouterr().err.strip().startswith(message)
    assert not data_dir.exists()  # refused before anything was created


def test_host_or_port_with_stdio_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--transport", "stdio", "--port", "6000"])
    assert exit_.value.code == 2
    assert "--host and --port apply to --transport http or dual, not stdio" in capsys.readouterr().err
