"""Helpers for the server tests (no tests here): free ports, child environments, `ltmc serve` processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx2
from support import REPO
from support import hash_env as child_env

__all__ = ["REPO", "ServerProcess", "child_env", "free_port", "wait_for_health"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_health(
    base_url: str, timeout: float = 60, failed: Callable[[], str | None] = lambda: None
) -> dict[str, Any]:
    """Poll GET /health until it answers 200; `failed` returns a reason to give up early (the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (reason := failed()) is not None:
            raise AssertionError(reason)
        try:
            response = httpx2.get(f"{base_url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no answer from {base_url}/health within {timeout}s")


class ServerProcess:
    """An `ltmc serve` child process. stdin is a pipe held open (closing it is how stdio clients say goodbye);
    stderr (the log) goes to `log_path`."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path, port: int | None) -> None:
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(args), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=log_path.parent
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        def failed() -> str | None:
            if self.proc.poll() is None:
                return None
            return f"server exited with {self.proc.returncode}:\n{self.log()}"

        try:
            return wait_for_health(self.base_url, timeout, failed)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} never appeared in the log:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout}s:\n{self.log()}") from None

    def stop(self) -> None:
        """Kill the process if it still runs and release its pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()
