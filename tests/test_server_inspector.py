"""The MCP Inspector CLI (npm @modelcontextprotocol/inspector, pinned in tests/inspector) as an independent
client: list the tools, store and retrieve, over stdio, streamable HTTP and SSE.

Install it with `npm ci` in tests/inspector (scripts/setup.sh --dev does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ltms.service import MemoryService
from tests.helpers import ALL_TOOLS, REPO, ServerProcess, child_env, hash_settings, serve_command

INSPECTOR = REPO / "tests" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
TOKEN = "inspector-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not INSPECTOR.exists() or shutil.which("node") is None,
    reason="MCP Inspector CLI not installed: run `npm ci` in tests/inspector (scripts/setup.sh --dev does)",
)


def inspector(tmp_path: Path, *args: str, expect_rc: int = 0) -> dict[str, Any]:
    home = tmp_path / "inspector-home"  # it writes ~/.mcp-inspector
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(INSPECTOR), "--cli", *args, "--format", "json", "-q"],
        capture_output=True,
        text=True,
        timeout=90,
        env={"HOME": str(home), "PATH": _path()},
        cwd=tmp_path,
    )
    assert result.returncode == expect_rc, f"rc {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1]) if expect_rc == 0 else {}


def _path() -> str:
    node = shutil.which("node")
    assert node is not None
    return f"{Path(node).parent}:/usr/bin:/bin"


def call_tool(tmp_path: Path, target: list[str], tool: str, **args: Any) -> dict[str, Any]:
    pairs = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in args.items()]
    arg_options = ["--tool-arg", *pairs] if pairs else []  # variadic: it would swallow the next option
    result = inspector(tmp_path, *target, "--method", "tools/call", "--tool-name", tool, *arg_options)
    assert result["result"]["isError"] is False, result
    return result["result"]["structuredContent"]


def round_trip(tmp_path: Path, target: list[str], text: str) -> None:
    listed = inspector(tmp_path, *target, "--method", "tools/list", "--strict")  # --strict: portable schemas
    assert {tool["name"] for tool in listed["result"]["tools"]} == ALL_TOOLS
    stored = call_tool(tmp_path, target, "store_memory", text=text, tags=["inspector"])
    found = call_tool(tmp_path, target, "retrieve_memory", query=text, k=3)
    assert found["results"][0]["id"] == stored["id"] and found["results"][0]["tags"] == ["inspector"]


def test_inspector_over_stdio(tmp_path: Path, data_dir: Path) -> None:
    # The Inspector would take the server's --transport flag as its own: the server goes in a config file.
    config = tmp_path / "servers.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "ltmc": {
                        "command": serve_command("stdio")[0],
                        "args": serve_command("stdio")[1:],
                        "env": child_env(data_dir),
                    }
                }
            }
        )
    )
    # One call (each Inspector call starts a server): the full round trip runs over HTTP below.
    target = ["--config", str(config), "--server", "ltmc"]
    stored = call_tool(tmp_path, target, "store_memory", text="the inspector speaks stdio", tags=["inspector"])
    assert stored["created"] is True
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        assert service.get(stored["id"]).tags == ("inspector",)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One HTTP server for the module (each test stores its own memories)."""
    root = tmp_path_factory.mktemp("inspector")
    with ServerProcess(
        serve_command("http"), child_env(root / "data", LTMC_AUTH_TOKEN=TOKEN), root / "server.log"
    ) as server:
        server.wait_healthy()
        yield server


def test_inspector_over_streamable_http(tmp_path: Path, http_server: ServerProcess) -> None:
    target = [f"{http_server.base_url}/mcp", "--header", f"Authorization: Bearer {TOKEN}"]
    round_trip(tmp_path, target, "the inspector speaks streamable HTTP")


def test_inspector_over_sse_and_without_a_token(tmp_path: Path, http_server: ServerProcess) -> None:
    target = [f"{http_server.base_url}/sse", "--header", f"Authorization: Bearer {TOKEN}"]
    stored = call_tool(tmp_path, target, "store_memory", text="the inspector speaks SSE")
    assert stored["created"] is True
    stats = call_tool(tmp_path, target, "memory_stats")
    assert stats["memories"] >= 1
    # No token: the Inspector reports that authentication is required (exit status 3).
    inspector(tmp_path, f"{http_server.base_url}/mcp", "--method", "tools/list", expect_rc=3)
