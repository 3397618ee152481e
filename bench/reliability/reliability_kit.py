"""Shared pieces of the reliability trials: `ltmc serve` processes, MCP clients, the store/verify workloads,
percentiles and markdown output.

Used by the scripts in this folder (crash_trials.py, concurrency.py, load.py) and by tests/test_reliability_*.py,
so a figure in the README and the assertion in a test come from the same code. Nothing in ltms imports this.
Only loopback (127.0.0.1) is ever contacted; every loop is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

# Re-exported: the reliability scripts print their tables with the same helpers as the other benchmarks, and start
# their servers with the same helpers as the tests.
from bench.common import header as header
from bench.common import ms as ms
from bench.common import pct as pct
from bench.common import table as table
from tests.helpers import REPO as REPO
from tests.helpers import ServerProcess, child_env
from tests.helpers import bound_port as bound_port
from tests.helpers import serve_command as serve_command
from tests.helpers import wait_for_health as wait_for_health
from tests.helpers import wait_until as wait_until

CALL_TIMEOUT = 30.0  # seconds one tool call may take before it counts as an error (a hang)


# -- processes --------------------------------------------------------------------------------------------------


server_env = child_env  # a child environment on a data directory (the name the scripts use)


def stdio_params(env: dict[str, str]) -> StdioServerParameters:
    command = serve_command("stdio")
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


class HttpServer(ServerProcess):
    """`ltmc serve --transport http` on a port the system picks (read back from its log), its log (stderr) in a
    file. Use as a context manager or call stop(): the process is always killed."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(serve_command("http"), env, log_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.started_at = time.monotonic()

    def wait_healthy(self, timeout: float = 120) -> dict[str, Any]:
        return super().wait_healthy(timeout)


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- clients and tool calls -------------------------------------------------------------------------------------


@asynccontextmanager
async def http_client(
    url: str, token: str | None = None, mode: str = "auto", read_timeout: float = CALL_TIMEOUT
) -> AsyncIterator[Client]:
    """An MCP client session over streamable HTTP; its HTTP connections are closed with it (the SDK leaves a
    client it is given open)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=read_timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=read_timeout) as client:  # type: ignore[arg-type]
            yield client


class ToolFailed(Exception):
    """A tool call answered with is_error (the message is the tool's)."""


async def call(client: Client, tool: str, args: dict[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """A tool call that must succeed within `timeout`; raises ToolFailed on an error result, TimeoutError on a hang."""
    with anyio.fail_after(timeout):
        result = await client.call_tool(tool, args)
    if result.is_error:
        raise ToolFailed(" ".join(getattr(c, "text", "") for c in result.content) or "(no message)")
    assert result.structured_content is not None, result
    return result.structured_content


def unique_text(prefix: str, i: int) -> str:
    """A memory text no other text in a trial shares a word with, beyond the prefix (exact top-1 retrieval)."""
    return f"{prefix} memory {i} marker {uuid.uuid4().hex[:16]}"


@dataclass
class Ledger:
    """What the clients were told: every acknowledged store (id -> text), errors, per-tool latencies."""

    acked: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def timed(self, tool: str, seconds: float) -> None:
        self.latencies.setdefault(tool, []).append(seconds)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())


async def store_acked(client: Client, ledger: Ledger, text: str, **extra: Any) -> int:
    """Store `text`; record it as acknowledged only once the tool result with its id is in hand."""
    started = time.perf_counter()
    result = await call(client, "store_memory", {"text": text, **extra})
    ledger.timed("store_memory", time.perf_counter() - started)
    memory_id = int(result["id"])
    ledger.acked[memory_id] = text
    return memory_id


async def retrieve_ids(client: Client, ledger: Ledger, query: str, k: int = 3) -> list[int]:
    started = time.perf_counter()
    result = await call(client, "retrieve_memory", {"query": query, "k": k})
    ledger.timed("retrieve_memory", time.perf_counter() - started)
    return [int(hit["id"]) for hit in result["results"]]


@dataclass
class Visibility:
    checked: int = 0
    missing_get: list[int] = field(default_factory=list)  # get_memory failed or returned other text
    missing_retrieve: list[int] = field(default_factory=list)  # not among the top 3 for its own text
    memories: int = -1  # memory_stats
    vectors: int = -1

    @property
    def lost(self) -> int:
        return len(set(self.missing_get) | set(self.missing_retrieve))


async def verify(client: Client, acked: dict[int, str], concurrency: int = 4) -> Visibility:
    """Every acknowledged memory through MCP: get_memory returns its text, retrieve_memory finds it by its text."""
    seen = Visibility()
    items = sorted(acked.items())

    async def check(chunk: Sequence[tuple[int, str]]) -> None:
        for memory_id, text in chunk:
            seen.checked += 1
            try:
                if (await call(client, "get_memory", {"id": memory_id}))["text"] != text:
                    seen.missing_get.append(memory_id)
            except ToolFailed:
                seen.missing_get.append(memory_id)
            found = await call(client, "retrieve_memory", {"query": text, "k": 3})
            if memory_id not in [hit["id"] for hit in found["results"]]:
                seen.missing_retrieve.append(memory_id)

    async with anyio.create_task_group() as tg:
        for n in range(concurrency):
            tg.start_soon(check, items[n::concurrency])
    stats = await call(client, "memory_stats", {})
    seen.memories, seen.vectors = stats["memories"], stats["index"]["vectors"]
    return seen


# -- the crash workload --------------------------------------------------------------------------------------------


async def store_until_killed(
    url: str, ledger: Ledger, prefix: str, kill: Callable[[], None], delay: float = 0.0, after_acks: int = 1
) -> int:
    """Store memories over streamable HTTP in a loop; once `after_acks` stores were acknowledged and `delay` more
    seconds passed, call `kill` (SIGKILL the server) while the writer goes on storing. Returns how many stores
    were acknowledged. A store whose answer never came is not acknowledged, whatever happened to it on the server.
    Counting acknowledgements, not seconds, is what makes the kill land mid-stores on a slow machine too."""
    enough_acks, writer_done = anyio.Event(), anyio.Event()
    before = len(ledger.acked)

    async def writer() -> None:
        try:
            async with http_client(url, read_timeout=10) as client:
                for i in range(1_000_000):
                    await store_acked(client, ledger, unique_text(prefix, i))
                    if len(ledger.acked) - before >= after_acks:
                        enough_acks.set()
        except Exception:  # the server died mid-call: expected, the loop ends here
            pass
        finally:
            enough_acks.set()
            writer_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        with anyio.fail_after(120):
            await enough_acks.wait()
        if delay:
            await anyio.sleep(delay)
        kill()
        with anyio.move_on_after(15):  # the in-flight call fails on its own once the socket closes
            await writer_done.wait()
        tg.cancel_scope.cancel()
    return len(ledger.acked) - before


# -- output ------------------------------------------------------------------------------------------------------


def progress(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str))


# -- the concurrency workload ---------------------------------------------------------------------------------------


async def mixed_client(
    client: Client, name: str, ledger: Ledger, shared: dict[int, str], ops: int, rng_seed: int
) -> None:
    """`ops` rounds of: store a memory, find it at once by its text (read-your-writes), and read back one memory
    some other client was already told was stored (cross-process visibility). Every failure is recorded in
    `ledger.errors`; nothing is raised."""
    import random

    rng = random.Random(rng_seed)
    for i in range(ops):
        try:
            text = unique_text(name, i)
            memory_id = await store_acked(client, ledger, text)
            shared[memory_id] = text
            if memory_id not in await retrieve_ids(client, ledger, text):
                ledger.errors.append(f"{name}: memory {memory_id} not found right after its store")
            others = [m for m in list(shared) if m not in ledger.acked]
            if others:
                other = rng.choice(others)
                started = time.perf_counter()
                found = await call(client, "get_memory", {"id": other})
                ledger.timed("get_memory", time.perf_counter() - started)
                if found["text"] != shared[other]:
                    ledger.errors.append(f"{name}: memory {other} has other text")
                if other not in await retrieve_ids(client, ledger, shared[other]):
                    ledger.errors.append(f"{name}: memory {other}, acknowledged to another client, not found")
        except Exception as exc:  # a failed or hung call is an error of the run, not of this script
            ledger.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])


def run_script(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a trial script in its own process group; on timeout the whole group (its servers too) is killed."""
    importable = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # bench and tests
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": importable},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{argv} still running after {timeout}s:\n{out}\n{err[-3000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
