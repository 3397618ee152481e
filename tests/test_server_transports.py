"""Real `ltmc serve` processes spoken to by the SDK's real clients: stdio, streamable HTTP and SSE, in both
protocol eras; dual mode; auth; DNS-rebinding protection; clean shutdown on signals and stdin EOF."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from test_server_support import ServerProcess, child_env, free_port, wait_for_health

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # auto negotiates 2026-07-28; legacy forces the initialize handshake
MODERN = "2026-07-28"
TOKEN = "test-token-0123456789abcdef"
JSON_POST = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
StartServer = Callable[..., ServerProcess]


def stdio_params(data_dir: Path, *args: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "ltms", "serve", *args], env=child_env(data_dir, **env)
    )


def http_client(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=30))


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
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


@pytest.mark.parametrize("mode", MODES)
async def test_stdio(data_dir: Path, mode: str) -> None:
    async with Client(stdio_params(data_dir, "--transport", "stdio"), mode=mode) as client:
        await store_and_find(client, f"stdio works in {mode} mode", mode)
        # Bad input is an error result naming the problem; the server stays up.
        bad = await client.call_tool("retrieve_memory", {"query": "x", "k": 1000})
        assert bad.is_error and "k" in bad.content[0].text and "100" in bad.content[0].text
        wrong_type = await client.call_tool("store_memory", {"text": {"not": "a string"}})
        assert wrong_type.is_error and "text" in wrong_type.content[0].text
        assert (await call(client, "memory_stats", {}))["memories"] == 1
    assert manifest(data_dir)["last_seq"] >= 1  # the client closed stdin: the snapshot was saved


async def test_stdio_stdout_carries_only_protocol_and_stdin_eof_exits_cleanly(data_dir: Path) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ltms", "serve", "--transport", "stdio", "--log-level", "debug"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(data_dir),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # debug logging went to stderr, not stdout
    assert json.loads(lines[0])["result"]["serverInfo"]["name"] == "ltmc"
    assert "DEBUG" in proc.stderr


def test_stdio_drops_an_oversized_message_and_carries_on(data_dir: Path) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    oversized = '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + "x" * (5 * 1024 * 1024) + '"}}'
    proc = subprocess.run(
        [sys.executable, "-m", "ltms", "serve", "--transport", "stdio"],
        input=f"{oversized}\nnot json at all\n{json.dumps(request)}\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(data_dir),
    )
    assert proc.returncode == 0, proc.stderr
    assert "dropping a stdin message longer than" in proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert answers[-1]["id"] == 7 and "result" in answers[-1]


# -- HTTP: streamable and SSE ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One HTTP server with bearer auth for the module's HTTP tests."""
    root = tmp_path_factory.mktemp("http")
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "ltms", "serve", "--transport", "http", "--port", str(port)],
        child_env(root / "data", LTMC_AUTH_TOKEN=TOKEN),
        root / "server.log",
        port,
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_streamable_http(http_server: ServerProcess, mode: str) -> None:
    async with Client(http_client(f"{http_server.base_url}/mcp", TOKEN), mode=mode) as client:
        await store_and_find(client, f"streamable HTTP works in {mode} mode", mode)


@pytest.mark.parametrize("mode", MODES)
async def test_sse(http_server: ServerProcess, mode: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with Client(sse_client(f"{http_server.base_url}/sse", headers=headers), mode=mode) as client:
        await store_and_find(client, f"legacy SSE works in {mode} mode", mode)


async def test_health_is_open_and_reports_the_service(http_server: ServerProcess, tmp_path_factory: Any) -> None:
    assert httpx2.get(f"{http_server.base_url}/health").json() == {"status": "ok"}  # no token: only "up"
    response = httpx2.get(f"{http_server.base_url}/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["version"]
    assert isinstance(health["memories"], int) and health["index"]["state"] in ("created", "loaded", "rebuilt")
    assert Path(health["data_dir"]).is_absolute()


@pytest.mark.parametrize(("method", "path"), [("POST", "/mcp"), ("GET", "/sse"), ("POST", "/messages/?session_id=0")])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_auth_missing_or_wrong_token_is_401(
    http_server: ServerProcess, method: str, path: str, authorization: str | None
) -> None:
    headers = dict(JSON_POST)
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx2.request(method, f"{http_server.base_url}{path}", headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_auth_wrong_token_fails_the_sdk_client(http_server: ServerProcess) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces a 401 as one of several error types
        async with Client(http_client(f"{http_server.base_url}/mcp", "wrong"), mode="legacy") as client:
            await client.list_tools()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/mcp", {"Host": "evil.example"}, 421),
        ("/mcp", {"Host": "evil.example:80"}, 421),
        ("/mcp", {"Origin": "http://evil.example"}, 403),
        ("/sse", {"Host": "attacker.test:1234"}, 421),
        ("/health", {"Host": "evil.example"}, 421),
    ],
)
def test_foreign_host_or_origin_is_rejected(
    http_server: ServerProcess, path: str, headers: dict[str, str], status: int
) -> None:
    all_headers = {**JSON_POST, "Authorization": f"Bearer {TOKEN}", **headers}
    if path == "/mcp":
        response = httpx2.post(f"{http_server.base_url}{path}", headers=all_headers, content=b"{}")
    else:
        response = httpx2.get(f"{http_server.base_url}{path}", headers=all_headers)
    assert response.status_code == status


def test_local_origin_is_accepted(http_server: ServerProcess) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    response = httpx2.post(
        f"{http_server.base_url}/mcp",
        json=request,
        headers={**JSON_POST, "Authorization": f"Bearer {TOKEN}", "Origin": f"http://localhost:{http_server.port}"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status"), [(b"this is not json", 400), (b"[" * 100, 400), (b" " * (5 * 1024 * 1024), 413)]
)
def test_malformed_and_oversized_requests_are_refused_and_the_server_stays_up(
    http_server: ServerProcess, body: bytes, status: int
) -> None:
    response = httpx2.post(
        f"{http_server.base_url}/mcp", content=body, headers={**JSON_POST, "Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == status
    assert httpx2.get(f"{http_server.base_url}/health").status_code == 200


# -- dual -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_dual_store_over_stdio_retrieve_over_http_at_once(data_dir: Path, mode: str) -> None:
    port = free_port()
    params = stdio_params(data_dir, "--transport", "dual", "--port", str(port))
    async with Client(params, mode=mode) as stdio:
        stored = await call(stdio, "store_memory", {"text": "the build server is called hopper", "namespace": "ops"})
        assert wait_for_health(f"http://127.0.0.1:{port}")["memories"] == 1
        async with Client(http_client(f"http://127.0.0.1:{port}/mcp"), mode=mode) as http:
            found = await call(http, "retrieve_memory", {"query": "what is the build server called", "k": 1})
            assert found["results"][0]["id"] == stored["id"]
            # ...and the other way round.
            other = await call(http, "store_memory", {"text": "stored over HTTP"})
        assert (await call(stdio, "get_memory", {"id": other["id"]}))["text"] == "stored over HTTP"
    assert manifest(data_dir)["last_seq"] >= 2


# -- shutdown ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stdin EOF"])
async def test_dual_mode_shuts_down_cleanly(start_server: StartServer, data_dir: Path, how: str) -> None:
    server = start_server("dual")
    async with Client(http_client(f"{server.base_url}/mcp"), mode="legacy") as client:
        ids = [(await call(client, "store_memory", {"text": f"remember {i} before {how}"}))["id"] for i in range(3)]
        # An open session must not hold up the shutdown.
        started = time.monotonic()
        if how == "stdin EOF":
            server.close_stdin()
        else:
            server.signal(getattr(signal, how))
        assert server.wait(timeout=15) == 0, server.log()
    assert time.monotonic() - started < 8
    assert manifest(data_dir)["last_seq"] >= 3 and manifest(data_dir)["count"] == len(ids)
    assert server.proc.stdout is not None and server.proc.stdout.read() == b""  # nothing but protocol on stdout
    assert "Traceback" not in server.log()


async def test_shutdown_with_an_open_sse_stream(start_server: StartServer, data_dir: Path) -> None:
    server = start_server("http")
    async with Client(sse_client(f"{server.base_url}/sse"), mode="legacy") as client:
        await call(client, "store_memory", {"text": "open stream at shutdown"})
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, server.log()
        assert time.monotonic() - started < 8
    assert manifest(data_dir)["last_seq"] >= 1
    assert "ERROR" not in server.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stdio_mode_exits_cleanly_on_a_signal(start_server: StartServer, signum: int) -> None:
    server = start_server("stdio")
    server.wait_for_log("serving over stdio")
    server.signal(signum)
    assert server.wait(timeout=10) == 0, server.log()  # stdin is still open: the reader must not block the exit


# -- start-up checks ----------------------------------------------------------------------------------------------


def run_serve(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ltms", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(data_dir, **env),
        stdin=subprocess.DEVNULL,
    )


def test_refuses_a_non_loopback_host_without_a_token(data_dir: Path) -> None:
    result = run_serve(data_dir, "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert "LTMC_AUTH_TOKEN" in result.stderr and "--allow-insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_loopback_host_with_a_token_starts(start_server: StartServer, data_dir: Path) -> None:
    server = start_server("http", "--host", "0.0.0.0", env=child_env(data_dir, LTMC_AUTH_TOKEN=TOKEN))
    assert server.wait_healthy()["status"] == "ok"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_a_taken_port_fails_fast_with_a_clear_message(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(data_dir, "--transport", "http", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_http_settings_come_from_the_environment(start_server: StartServer, data_dir: Path) -> None:
    creator = start_server("stdio", env=child_env(data_dir))  # a store to open: read-only never creates one
    creator.close_stdin()
    assert creator.wait() == 0
    port = free_port()
    server = start_server(
        "http",
        port=None,
        env=child_env(data_dir, LTMC_HTTP_PORT=str(port), LTMC_HTTP_HOST="127.0.0.1", LTMC_READ_ONLY="1"),
    )
    server.port = port
    assert server.wait_healthy()["read_only"] is True


# -- the default embedder ---------------------------------------------------------------------------------------


async def test_default_embedder_finds_a_paraphrase(start_server: StartServer, data_dir: Path) -> None:
    env = {k: v for k, v in child_env(data_dir).items() if k != "LTMC_EMBEDDER"}  # the default: MiniLM
    server = start_server("http", env=env)
    async with Client(http_client(f"{server.base_url}/mcp")) as client:
        memories = [
            "The team's weekly sync moved to Thursday at 3pm.",
            "Our production database runs PostgreSQL 16 on a dedicated host.",
            "Alice prefers tea over coffee in the morning.",
        ]
        ids = [(await call(client, "store_memory", {"text": text}))["id"] for text in memories]
        found = await call(client, "retrieve_memory", {"query": "which SQL engine backs prod?", "k": 3})
        assert found["results"][0]["id"] == ids[1]
        stats = await call(client, "memory_stats", {})
        assert "minilm" in stats["model"].lower()


def test_python_dash_m_ltms_and_the_console_script_agree() -> None:
    # `python -m ltms` and `ltmc` share the parser: --help lists the serve transports for both.
    result = subprocess.run(
        [sys.executable, "-m", "ltms", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert result.returncode == 0 and "{stdio,http,dual}" in result.stdout


def test_extra_allowed_host_is_accepted_behind_a_proxy(start_server, data_dir: Path) -> None:
    server = start_server("http", env=child_env(data_dir, LTMC_ALLOWED_HOSTS="memory.example.com"))
    assert httpx2.get(f"{server.base_url}/health", headers={"Host": "memory.example.com"}).status_code == 200
    assert httpx2.get(f"{server.base_url}/health", headers={"Host": "other.example.com"}).status_code == 421
