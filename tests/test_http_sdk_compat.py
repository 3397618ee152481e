"""ltms/server/sdk_compat.py: every assumption about the SDK's, uvicorn's and sse-starlette's internals holds for
the installed versions, and one that breaks fails at import with one line naming what changed (issue 15.2)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import pytest
import uvicorn
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from ltms.server import sdk_compat
from ltms.server.sdk_compat import CHECKS, UpstreamChanged, check_all
from tests.helpers import child_env


def test_the_installed_versions_pass_every_check() -> None:
    assert [(package, check()) for package, check in CHECKS] == [(package, None) for package, _ in CHECKS]


def _init_without(*names: str) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # sets none of `names`
        self.something_else = True

    return __init__


BREAKAGES: list[tuple[str, Callable[[pytest.MonkeyPatch], None], str]] = [
    (
        "lowlevel server attribute",
        lambda mp: mp.setattr(MCPServer, "__init__", _init_without("_lowlevel_server")),
        "mcp SDK changed: MCPServer no longer keeps its low-level server in `_lowlevel_server`",
    ),
    (
        "Server.run signature",
        lambda mp: mp.setattr(Server, "run", lambda self, streams, options: None),
        "mcp SDK changed: Server.run no longer takes (read_stream, write_stream, initialization_options)",
    ),
    (
        "stdio_server signature",
        lambda mp: mp.setattr(sdk_compat, "stdio_server", lambda: None),
        "mcp SDK changed: stdio_server() no longer takes stdin= and stdout=",
    ),
    (
        "Starlette.user_middleware",
        lambda mp: mp.setattr(Starlette, "__init__", _init_without("user_middleware")),
        "mcp SDK changed: starlette.Starlette no longer keeps `user_middleware`",
    ),
    (
        "session_manager property",
        lambda mp: mp.setattr(MCPServer, "session_manager", None),
        "mcp SDK changed: MCPServer.session_manager is no longer a property",
    ),
    (
        "streamable_http_app parameters",
        lambda mp: mp.setattr(MCPServer, "streamable_http_app", lambda self, streamable_http_path="/mcp": None),
        "mcp SDK changed: MCPServer.<lambda>() no longer takes session_idle_timeout, max_sessions, transport_security",
    ),
    (
        "session manager's sessions",
        lambda mp: mp.setattr(StreamableHTTPSessionManager, "__init__", _init_without("_server_instances")),
        "mcp SDK changed: StreamableHTTPSessionManager no longer keeps its sessions in `_server_instances`",
    ),
    (
        "transport idle scope",
        lambda mp: mp.setattr(StreamableHTTPServerTransport, "__init__", _init_without("idle_scope")),
        "mcp SDK changed: StreamableHTTPServerTransport no longer has `idle_scope`",
    ),
    (
        "uvicorn capture_signals",
        lambda mp: mp.delattr(uvicorn.Server, "capture_signals"),
        "uvicorn changed: uvicorn.Server.capture_signals is gone",
    ),
    (
        "uvicorn serve",
        lambda mp: mp.setattr(uvicorn.Server, "serve", lambda self, sockets=None: None),
        "uvicorn changed: uvicorn.Server.serve() no longer calls capture_signals()",
    ),
    (
        "sse-starlette AppStatus",
        lambda mp: mp.delattr(AppStatus, "should_exit"),
        "sse-starlette changed: sse_starlette.sse.AppStatus.should_exit is gone",
    ),
    (
        "H11Protocol hook",
        lambda mp: mp.delattr(H11Protocol, "on_response_complete"),
        "uvicorn changed: uvicorn's H11Protocol.on_response_complete is gone",
    ),
    (
        "H11Protocol attributes",
        lambda mp: mp.setattr(H11Protocol, "__init__", _init_without("conn", "transport")),
        "uvicorn changed: uvicorn's H11Protocol no longer keeps `conn` and `transport`",
    ),
    (
        "h11 states",
        lambda mp: mp.delattr(h11.Connection, "their_state"),
        "uvicorn changed: h11.Connection.their_state or trailing_data is gone",
    ),
]


@pytest.mark.parametrize(("breakage", "message"), [(b[1], b[2]) for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_a_broken_assumption_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, breakage: Callable[[pytest.MonkeyPatch], None], message: str
) -> None:
    breakage(monkeypatch)
    with pytest.raises(UpstreamChanged) as info:
        check_all()
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    assert "installed:" in text and "pyproject.toml" in text


def test_the_server_refuses_to_start_with_one_line(data_dir: Path) -> None:
    code = (
        "import uvicorn; del uvicorn.Server.capture_signals\n"
        "from ltms.cli import main\n"
        "raise SystemExit(main(['serve', '--transport', 'http', '--port', '0']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env(data_dir)
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ltmc: error: uvicorn changed: uvicorn.Server.capture_signals is gone")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not data_dir.exists()  # it stopped before opening the store
