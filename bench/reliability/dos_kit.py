"""Shared pieces of the denial-of-service trials (slowloris.py, sessions.py): an `ltmc serve --transport http`
process under an open-file limit (optionally from another checkout, to measure the code before a fix), and a
normal client that keeps calling while an attack runs, its latencies and errors kept per phase.

Loopback only; every loop ends on a stop event or a deadline.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import reliability_kit as kit

ROOT = kit.REPO


class LimitedServer:
    """`ltmc serve --transport http` from `checkout`, with RLIMIT_NOFILE set to `fd_limit` (soft and hard, as on
    a machine where it cannot be raised). Always killed by stop()."""

    def __init__(
        self,
        work: Path,
        *,
        checkout: Path = ROOT,
        fd_limit: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._port: int | None = None  # port 0: read back from the log (kit.bound_port)
        self.log_path = work / "server.log"
        child_env = kit.server_env(work / "data", "hash", **(env or {}))
        child_env["PYTHONPATH"] = str(checkout)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()

        def limit_files() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(
            kit.serve_command("http"),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=work,
            preexec_fn=limit_files,  # sets the limit in the child, before exec
        )

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = kit.wait_until(lambda: kit.bound_port(self.log()), "the server's HTTP port", 120, self._died)
        return self._port

    def _died(self) -> str | None:
        return None if self.proc.poll() is None else f"exited with {self.proc.returncode}:\n{self.log()[-3000:]}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_healthy(self, timeout: float = 120) -> dict[str, Any]:
        return kit.wait_for_health(self.base_url, timeout, self._died)

    def rss_kib(self) -> int:
        return kit.rss_kib(self.proc.pid)

    def open_files(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._log.close()


def raise_own_file_limit(needed: int) -> None:
    """The attacking side needs a file descriptor per connection it holds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- the normal client -------------------------------------------------------------------------------------------


@dataclass
class Calls:
    """One kind of normal call in one phase: latencies of the calls answered, errors of the others."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def row(self, phase: str, kind: str) -> list[object]:
        s = self.latencies
        answered = f"{len(s)}/{len(s) + len(self.errors)}"
        if not s:
            return [phase, kind, answered, "-", "-", "-", f"**{len(self.errors)}**"]
        return [
            phase,
            kind,
            answered,
            kit.ms(kit.pct(s, 50)),
            kit.ms(kit.pct(s, 99)),
            kit.ms(max(s)),
            f"**{len(self.errors)}**",
        ]


CALL_HEADERS = ["phase", "normal client's call", "answered", "p50 ms", "p99 ms", "max ms", "errors"]


@dataclass
class NormalClient:
    """Calls, sorted by the phase they started in (`phase` is switched by the trial)."""

    phase: str = "before"
    calls: dict[tuple[str, str], Calls] = field(default_factory=dict)

    def of(self, kind: str) -> Calls:
        return self.calls.setdefault((self.phase, kind), Calls())

    async def keep_calling(
        self, kind: str, action: Callable[[], Awaitable[object]], stop: anyio.Event, interval: float, timeout: float
    ) -> None:
        """Call `action` every `interval` seconds until `stop`; a call that fails or takes over `timeout` seconds
        is an error."""
        while not stop.is_set():
            calls = self.of(kind)
            started = time.perf_counter()
            try:
                with anyio.fail_after(timeout):
                    await action()
                calls.latencies.append(time.perf_counter() - started)
            except Exception as exc:  # every failure is a finding of the trial
                calls.errors.append(f"{kind}: {describe(exc)}"[:300])
            with anyio.move_on_after(max(0.0, interval - (time.perf_counter() - started))):
                await stop.wait()

    async def keep_calling_in_session(
        self,
        kind: str,
        url: str,
        action: Callable[[Any], Awaitable[object]],
        stop: anyio.Event,
        interval: float,
        timeout: float,
        mode: str = "legacy",
    ) -> None:
        """Like keep_calling, with `action(client)` over one MCP session; a session that breaks is an error and is
        opened again."""
        while not stop.is_set():
            try:
                # A read timeout under sse-starlette's 15 s ping would drop the session's event stream.
                async with kit.http_client(url, mode=mode, read_timeout=max(timeout, 60)) as client:
                    await self.keep_calling(kind, lambda: action(client), stop, interval, timeout)
            except Exception as exc:  # the SDK client ends its session on a failed request
                self.of(kind).errors.append(f"{kind}: session lost: {describe(exc)}"[:300])
                with anyio.move_on_after(interval):
                    await stop.wait()

    def rows(self) -> list[list[object]]:
        return [calls.row(phase, kind) for (phase, kind), calls in self.calls.items()]

    def errors(self, phase: str | None = None) -> list[str]:
        return [e for (p, _), calls in self.calls.items() if phase in (None, p) for e in calls.errors]

    def answered(self, phase: str) -> int:
        return sum(len(calls.latencies) for (p, _), calls in self.calls.items() if p == phase)


def describe(error: BaseException) -> str:
    """The innermost exceptions of (nested) exception groups, type and message."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"


async def fresh_health(base_url: str, timeout: float) -> None:
    """GET /health on a new connection (what a new client, or a load balancer's probe, does)."""
    async with httpx2.AsyncClient(timeout=timeout) as client:
        response = await client.get(f"{base_url}/health")
        response.raise_for_status()


def latency_note() -> str:
    return (
        "Latency is measured in the client, on this same 2-core machine as the server and the attack, per call; "
        "an error is a call refused, failed, or unanswered within the timeout."
    )


def add_trial_options(parser: argparse.ArgumentParser, *, interval: float, timeout: float) -> None:
    """The options every denial-of-service trial shares: the normal client's pace, the checkout, the output."""
    parser.add_argument("--baseline", type=float, default=3, help="seconds of calls before and after the attack")
    parser.add_argument("--interval", type=float, default=interval, help="seconds between two normal calls")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds until an unanswered call is an error")
    parser.add_argument("--checkout", default=str(ROOT), help="run the server from this checkout")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the server's log)")


def run_trial(run: Callable[[Any, Path], Awaitable[dict[str, Any]]], args: Any, prefix: str) -> dict[str, Any]:
    """`run(args, work)` in a fresh work directory, removed afterwards unless --keep."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return anyio.run(run, args, work)
    finally:
        if args.keep:
            kit.progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
