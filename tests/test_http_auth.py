"""What a user sees when the bearer token is missing or wrong, through real clients of a real server: the SDK's
client raises an MCPError carrying the server's message, and the MCP Inspector CLI shows it over streamable HTTP
(exit status 3; with --stored-auth-only, as without a terminal it would otherwise ask for OAuth)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers import ServerProcess, child_env
from tests.test_server_inspector import INSPECTOR, _path

pytestmark = pytest.mark.anyio
TOKEN = "auth-token-0123456789abcdef"
MESSAGE = "bearer token missing or wrong"
StartServer = Callable[..., ServerProcess]


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@pytest.fixture
def server(start_server: StartServer, data_dir: Path) -> ServerProcess:
    return start_server("http", env=child_env(data_dir, LTMC_AUTH_TOKEN=TOKEN))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_the_sdk_client_gets_the_servers_message(server: ServerProcess, mode: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers) as http:  # the SDK leaves a client it is given open
        transport = streamable_http_client(f"{server.base_url}/mcp", http_client=http)
        with pytest.raises(BaseExceptionGroup) as info:
            async with Client(transport, mode=mode) as client:
                await client.list_tools()
    errors = [leaf for leaf in leaves(info.value) if isinstance(leaf, MCPError)]
    assert errors and all(str(error).startswith(MESSAGE) for error in errors), leaves(info.value)


@pytest.mark.skipif(not INSPECTOR.exists() or shutil.which("node") is None, reason="MCP Inspector CLI not installed")
@pytest.mark.parametrize(
    ("path", "expected"),
    [("/mcp", MESSAGE), ("/sse", "SSE error: Non-200 status code (401)")],  # over SSE it shows only the status
)
def test_the_inspector_shows_the_message(server: ServerProcess, tmp_path: Path, path: str, expected: str) -> None:
    home = tmp_path / "inspector-home"
    home.mkdir()
    target = [f"{server.base_url}{path}", "--header", "Authorization: Bearer wrong-token", "--stored-auth-only"]
    result = subprocess.run(
        [str(INSPECTOR), "--cli", *target, "--method", "tools/list", "--format", "json", "-q"],
        capture_output=True,
        text=True,
        timeout=90,
        env={"HOME": str(home), "PATH": _path()},
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stdout + result.stderr  # the Inspector's "authentication required"
    shown = json.loads((result.stdout or result.stderr).strip().splitlines()[-1])["error"]["message"]
    assert expected in shown
