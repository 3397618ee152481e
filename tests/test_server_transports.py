"""Real `ltmc serve` processes spoken to by the SDK's real clients: one smoke test per transport (stdio, streamable
HTTP, SSE, dual) in both protocol eras, and what only a process can show: stdout carrying nothing but the protocol,
clean shutdown on signals and stdin EOF with streams open, a taken port. HTTP status and header behaviour (401, 421,
403, 413, /health) is tested in process in test_server_http_app.py."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers import ServerProcess, bound_port, child_env, serve_command, wait_for_health, wait_until

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # auto negotiates 2026-07-28; legacy forces the initialize handshake
MODERN = "2026-07-28"
TOKEN = "test-token-0123456789abcdef"
StartServer = Callable[..., ServerProcess]


def stdio_params(env: dict[str, str], transport: str = "stdio") -> StdioServerParameters:
    command = serve_command(transport)
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


@asynccontextmanager
async def http_client(url: str, token: str | None = None, mode: str = "auto") -> AsyncIterator[Client]:
    """An SDK client session over streamable HTTP; the SDK leaves an HTTP client it is given open: close it here."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def store_and_find(client: Client, text: str, mode: str) -> None:
    """The round trip every transport must pass: list the tools, store, retrieve the memory at once."""
    if mode == "auto":
        assert client.protocol_version == MODERN
    else:
        assert client.protocol_version < MODERN  # a handshake-era version, e.g. 2025-11-25
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"store_memory", "retrieve_memory", "memory_stats"} <= names
    stored = await call(client, "store_memory", {"text": text, "tags": ["transport"]})
    found = await call(client, "retrieve_memory", {"query": text, "k": 3})
    assert found["results"][0]["id"] == stored["id"]
    assert found["results"][0]["text"] == text


def manifest(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "faiss_index.manifest.json").read_text())


# -- stdio -----------------------------------------------------------------------------------------------------


async def test_stdio_with_the_default_model(data_dir: Path) -> None:
    """No LTMC_EMBEDDER: the default model (MiniLM) finds a paraphrase. Closing the client saves the snapshot."""
    env = {k: v for k, v in child_env(data_dir).items() if k != "LTMC_EMBEDDER"}
    async with Client(stdio_params(env)) as client:
        await store_and_find(client, "stdio works with the default model", "auto")
        memories = [
            "The team's weekly sync moved to Thursday at 3pm.",
            "Our production database runs PostgreSQL 16 on a dedicated host.",
        ]
        ids = [(await call(client, "store_memory", {"text": text}))["id"] for text in memories]
        found = await call(client, "retrieve_memory", {"query": "which SQL engine backs prod?", "k": 3})
        assert found["results"][0]["id"] == ids[1]
        assert "minilm" in (await call(client, "memory_stats", {}))["model"].lower()
        # Bad input is an error result naming the problem; the server stays up.
        bad = await client.call_tool("retrieve_memory", {"query": "x", "k": 1000})
        assert bad.is_error and "k" in bad.content[0].text and "100" in bad.content[0].text
        assert (await call(client, "memory_stats", {}))["memories"] == 3
    assert manifest(data_dir)["last_seq"] >= 3  # the client closed stdin: the snapshot was saved


def test_stdio_stdout_carries_only_protocol_and_drops_what_it_cannot_read(data_dir: Path) -> None:
    """An oversized line and a non-JSON line are dropped (logged on stderr), the next request is answered, debug
    logs go to stderr, and stdin EOF ends the process with status 0."""
    request = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    oversized = '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + "x" * (5 * 1024 * 1024) + '"}}'
    proc = subprocess.run(
        serve_command("stdio", "--log-level", "debug"),
        input=f"{oversized}\nnot json at all\n{json.dumps(request)}\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(data_dir),
    )
    assert proc.returncode == 0, proc.stderr
    assert "dropping a stdin message longer than" in proc.stderr
    assert "DEBUG" in proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is JSON-RPC
    assert answers[-1]["id"] == 7 and answers[-1]["result"]["serverInfo"]["name"] == "ltmc"


# -- HTTP: streamable and SSE ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One HTTP server with bearer auth for the module's HTTP tests."""
    root = tmp_path_factory.mktemp("http")
    with ServerProcess(
        serve_command("http"), child_env(root / "data", LTMC_AUTH_TOKEN=TOKEN), root / "server.log"
    ) as server:
        server.wait_healthy()
        yield server


@pytest.mark.parametrize("mode", MODES)
async def test_streamable_http(http_server: ServerProcess, mode: str) -> None:
    async with http_client(http_server.mcp_url, TOKEN, mode) as client:
        await store_and_find(client, f"streamable HTTP works in {mode} mode", mode)


@pytest.mark.parametrize("mode", MODES)
async def test_sse(http_server: ServerProcess, mode: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with Client(sse_client(f"{http_server.base_url}/sse", headers=headers), mode=mode) as client:
        await store_and_find(client, f"legacy SSE works in {mode} mode", mode)


async def test_a_wrong_token_fails_the_sdk_client(http_server: ServerProcess) -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(MCPError), flatten_subgroups=True):
        async with http_client(http_server.mcp_url, "wrong", "legacy") as client:
            await client.list_tools()


# -- dual -----------------------------------------------------------------------------------------------------


async def test_dual_store_over_stdio_retrieve_over_http_at_once(data_dir: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "dual.log"
    with open(log_path, "w") as log:
        async with Client(stdio_client(stdio_params(child_env(data_dir), "dual"), errlog=log), mode="legacy") as stdio:
            port = wait_until(lambda: bound_port(log_path.read_text()), "the dual server's HTTP port")
            stored = await call(
                stdio, "store_memory", {"text": "the build server is called hopper", "namespace": "ops"}
            )
            assert wait_for_health(f"http://127.0.0.1:{port}")["memories"] == 1
            async with http_client(f"http://127.0.0.1:{port}/mcp") as http:
                found = await call(http, "retrieve_memory", {"query": "what is the build server called", "k": 1})
                assert found["results"][0]["id"] == stored["id"]
                other = await call(http, "store_memory", {"text": "stored over HTTP"})  # ...and the other way round
            assert (await call(stdio, "get_memory", {"id": other["id"]}))["text"] == "stored over HTTP"
    assert manifest(data_dir)["last_seq"] >= 2  # stdin EOF stopped the whole process cleanly


# -- shutdown ---------------------------------------------------------------------------------------------------


async def test_dual_mode_stops_cleanly_on_sigterm_with_a_session_open(
    start_server: StartServer, data_dir: Path
) -> None:
    server = start_server("dual")
    async with http_client(server.mcp_url, mode="legacy") as client:
        ids = [(await call(client, "store_memory", {"text": f"remember {i} before SIGTERM"}))["id"] for i in range(3)]
        server.signal(signal.SIGTERM)  # an open session must not hold up the shutdown
        assert server.wait() == 0, server.log()
    assert manifest(data_dir)["last_seq"] >= 3 and manifest(data_dir)["count"] == len(ids)
    assert server.proc.stdout is not None and server.proc.stdout.read() == b""  # nothing but protocol on stdout
    assert "Traceback" not in server.log()


async def test_http_stops_cleanly_on_sigterm_with_an_sse_stream_open(start_server: StartServer, data_dir: Path) -> None:
    server = start_server("http")
    async with Client(sse_client(f"{server.base_url}/sse"), mode="legacy") as client:
        await call(client, "store_memory", {"text": "open stream at shutdown"})
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
    assert manifest(data_dir)["last_seq"] >= 1
    assert "ERROR" not in server.log()


def test_stdio_mode_exits_cleanly_on_sigint_with_stdin_open(start_server: StartServer) -> None:
    server = start_server("stdio")
    server.wait_for_log("serving over stdio")
    server.signal(signal.SIGINT)
    assert server.wait() == 0, server.log()  # stdin is still open: the reader must not block the exit


# -- start-up ---------------------------------------------------------------------------------------------------


def test_a_taken_port_fails_fast_with_a_clear_message(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve_command("http", "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=120,
            env=child_env(data_dir),
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_python_dash_m_ltms_and_the_console_script_agree() -> None:
    # `python -m ltms` and `ltmc` share the parser: --help lists the serve transports for both.
    result = subprocess.run(
        [sys.executable, "-m", "ltms", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(Path("/nonexistent")),
    )
    assert result.returncode == 0 and "{stdio,http,dual}" in result.stdout
