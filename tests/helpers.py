"""Helpers for the tests and the benchmarks (no tests here): child environments, `ltmc serve` processes, waiting on
a condition, child Python processes.

bench/common.py and bench/reliability/reliability_kit.py import from here too, so a figure in the README and the
assertion in a test start their servers the same way. HTTP servers listen on port 0 and the bound port is read back
from their log (no free-port race). Waits poll a condition until a deadline; none sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx2

from ltms.config import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ltms.service import MemoryService

REPO = Path(__file__).resolve().parent.parent
# The line the server logs once its HTTP port is bound: "HTTP on http://127.0.0.1:40123: streamable /mcp, ..."
LISTENING = re.compile(r"HTTP on http://(?:\[[^\]]*\]|[^\s:/]+):(\d+):")
T = TypeVar("T")


def child_env(data_dir: Path, embedder: str = "hash", **extra: str) -> dict[str, str]:
    """The environment of a child process on `data_dir`: no inherited LTMC_*/FAISS_* settings, the fast hashing
    embedder unless told otherwise, and this checkout importable first (the shared venv may point elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTMC_", "FAISS_"))}
    env.update(
        {
            "LTMC_DATA_DIR": str(data_dir),
            "LTMC_EMBEDDER": embedder,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    env.update(extra)
    return env


def hash_settings(data_dir: Path, **extra: str) -> Settings:
    return Settings.load(env=child_env(data_dir, **extra))


# The seven tools every writable server publishes.
ALL_TOOLS = frozenset(
    {"store_memory", "retrieve_memory", "get_memory", "list_memories", "update_memory", "delete_memory", "memory_stats"}
)


def spawn_python(code: str, *args: str, env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    """Start `code` in a fresh interpreter with pipes, and return once it printed the line `ready` (line-buffered
    text); if it ends without printing it, fail with its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == f"{ready}\n", proc.communicate(timeout=30)[1]
    return proc


def run_python(
    code: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter; raise with its stderr when it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"child failed with {result.returncode}:\n{result.stderr}")
    return result


def free_port() -> int:
    """A loopback port nothing listens on right now. Only for a program that cannot listen on port 0 and report
    the port it got (PostgreSQL), or for a port that must refuse connections: another process may take it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def close_pipes(proc: subprocess.Popen[Any]) -> None:
    """Close a finished child's pipes: an unclosed one is a ResourceWarning, and warnings are errors here."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def wait_until(
    condition: Callable[[], T | None],
    what: str,
    timeout: float = 60,
    failed: Callable[[], str | None] = lambda: None,
) -> T:
    """Poll `condition` until it returns something other than None (or False); `failed` gives a reason to stop
    early (the process died). Raises AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if (reason := failed()) is not None:
            raise AssertionError(f"{what}: {reason}")
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def health(base_url: str) -> dict[str, Any] | None:
    """GET /health once: its JSON when it answers 200, None when nothing listens yet."""
    try:
        response = httpx2.get(f"{base_url}/health", timeout=5)
    except httpx2.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_for_health(
    base_url: str, timeout: float = 60, failed: Callable[[], str | None] = lambda: None
) -> dict[str, Any]:
    return wait_until(lambda: health(base_url), f"GET {base_url}/health", timeout, failed)


def serve_command(transport: str, *args: str) -> list[str]:
    """`python -m ltms serve` with an explicit transport; HTTP transports on port 0 unless `args` name one."""
    command = [sys.executable, "-m", "ltms", "serve", "--transport", transport, *args]
    if transport != "stdio" and "--port" not in args:
        command += ["--port", "0"]
    return command


def bound_port(log: str) -> int | None:
    """The HTTP port a server's log says it listens on, or None before that line."""
    match = LISTENING.search(log)
    return int(match.group(1)) if match else None


class ServerProcess:
    """A server child process (`ltmc serve`, start_server.sh, ...). stdin is a pipe held open (closing it is how
    stdio clients say goodbye) unless `stdin` says otherwise; stderr (the log) goes to `log_path`. The HTTP port is
    read from the log. Use as a context manager or call stop(): the process is always killed."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.PIPE,
        stdout: int | IO[Any] | None = subprocess.PIPE,
    ) -> None:
        self.log_path = log_path
        self._port: int | None = None
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()  # a restarted server may append to its predecessor's log
        self.proc = subprocess.Popen(
            list(args), env=env, stdin=stdin, stdout=stdout, stderr=self._log, cwd=cwd or log_path.parent
        )

    def log(self) -> str:
        """What this process wrote to its log (a log file shared with an earlier process keeps that one's lines)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def _died(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"the server exited with {self.proc.returncode}:\n{self.log()[-4000:]}"

    @property
    def port(self) -> int:
        """The bound HTTP port, waiting for the server to log it."""
        if self._port is None:
            self._port = wait_until(lambda: bound_port(self.log()), "the server's HTTP port", 90, self._died)
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def wait_healthy(self, timeout: float = 90) -> dict[str, Any]:
        return wait_for_health(self.base_url, timeout, self._died)

    def wait_for_log(self, text: str, timeout: float = 90) -> None:
        wait_until(lambda: text in self.log(), f"{text!r} in the server log", timeout, self._died)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n{self.log()[-4000:]}") from None

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the clean shutdown (final snapshot save). Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """Kill the process if it still runs and release its pipes and log."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(transport: str, env: dict[str, str], log_path: Path, *args: str, **kwargs: Any) -> ServerProcess:
    """`python -m ltms serve --transport TRANSPORT ARGS` (HTTP on port 0)."""
    return ServerProcess(serve_command(transport, *args), env, log_path, **kwargs)


def asgi_app(service: MemoryService, settings: Settings, ports: Sequence[int] = (5050,)) -> Starlette:
    """The HTTP app `ltmc serve` runs, built the way the runner builds it, listening (for the Host and Origin checks)
    on `ports`, for in-process tests (starlette's TestClient runs its lifespan, which the session manager needs)."""
    from ltms.server.http_app import build_http_app, build_mcp

    return build_http_app(build_mcp(service, settings, http=True), service, settings, ports)
