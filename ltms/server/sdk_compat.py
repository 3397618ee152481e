"""Every place LTMC relies on a private or undocumented part of the mcp SDK, uvicorn or sse-starlette.

Each shim below says which upstream behaviour it relies on. The assumptions are checked when this module is
imported, so an upgrade that breaks one fails at start-up with one line ("mcp SDK changed: ...") instead of an
AttributeError mid-request or a hang at shutdown. Everything else uses the public SDK surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import version
from typing import Any, Protocol

import h11
import uvicorn
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ltms.errors import LTMCError


class UpstreamChanged(LTMCError):
    """An assumption about a dependency's internals no longer holds: pin the tested version."""


def _assigns(function: Callable[..., Any], *names: str) -> bool:
    """Whether `function`'s own code uses every attribute name in `names` (e.g. sets `self.<name>`)."""
    code = inspect.unwrap(function).__code__
    return all(name in code.co_names for name in names)


def _has_parameters(function: Callable[..., Any], *names: str) -> bool:
    return set(names) <= set(inspect.signature(function).parameters)


# -- the checks ----------------------------------------------------------------------------------------------------
# Each returns None when the assumption holds, or what changed. `check_all` runs them at import.


def _check_lowlevel_server() -> str | None:
    # stdio: MCPServer keeps its low-level Server in `_lowlevel_server`, whose public `run(read, write, options)`
    # serves one connection; MCPServer.run_stdio_async() offers no way to pass our own stdin reader.
    if not _assigns(MCPServer.__init__, "_lowlevel_server"):
        return "MCPServer no longer keeps its low-level server in `_lowlevel_server`"
    if not _has_parameters(Server.run, "read_stream", "write_stream", "initialization_options"):
        return "Server.run no longer takes (read_stream, write_stream, initialization_options)"
    if not callable(getattr(Server, "create_initialization_options", None)):
        return "Server.create_initialization_options is gone"
    return None


def _check_stdio_server() -> str | None:
    # stdio: stdio_server(stdin=...) reads lines from any async iterable of str (our reader), and claims fd 1.
    if not _has_parameters(inspect.unwrap(stdio_server), "stdin", "stdout"):
        return "stdio_server() no longer takes stdin= and stdout="
    return None


def _check_http_sub_apps() -> str | None:
    # HTTP: the routes of mcp.streamable_http_app() and mcp.sse_app() are merged into one app, with the
    # authentication middleware those apps carry (`Starlette.user_middleware`), and the streamable session
    # manager (`MCPServer.session_manager`) runs in that app's lifespan.
    if not _assigns(Starlette.__init__, "user_middleware"):
        return "starlette.Starlette no longer keeps `user_middleware`"
    if not isinstance(inspect.getattr_static(MCPServer, "session_manager", None), property):
        return "MCPServer.session_manager is no longer a property"
    for builder, parameters in (
        (MCPServer.streamable_http_app, ("session_idle_timeout", "max_sessions", "transport_security")),
        (MCPServer.sse_app, ("transport_security", "max_request_body_size")),
    ):
        if not _has_parameters(builder, *parameters):
            return f"MCPServer.{builder.__name__}() no longer takes {', '.join(parameters)}"
    return None


def _check_sessions() -> str | None:
    # Session limits: the manager's open sessions are `_server_instances` (session id -> transport); a
    # transport's public `idle_scope` ends its session when cancelled, and its deadline is the end of the idle
    # period (infinite while a request or stream is open).
    if not _assigns(StreamableHTTPSessionManager.__init__, "_server_instances"):
        return "StreamableHTTPSessionManager no longer keeps its sessions in `_server_instances`"
    if not _assigns(StreamableHTTPServerTransport.__init__, "idle_scope"):
        return "StreamableHTTPServerTransport no longer has `idle_scope`"
    return None


def _check_uvicorn_signals() -> str | None:
    # Shutdown: uvicorn.Server.serve() installs its signal handlers through `capture_signals()` and re-raises
    # SIGTERM afterwards; overriding it leaves signal handling (and the final snapshot save) to LTMC.
    if not callable(getattr(uvicorn.Server, "capture_signals", None)):
        return "uvicorn.Server.capture_signals is gone"
    if not _assigns(uvicorn.Server.serve, "capture_signals"):
        return "uvicorn.Server.serve() no longer calls capture_signals()"
    return None


def _check_sse_shutdown() -> str | None:
    # Shutdown: sse-starlette ends its open streams once `AppStatus.should_exit` is true (documented; it
    # normally learns of shutdown from uvicorn's signal handler, which LTMC does not install).
    if not hasattr(AppStatus, "should_exit"):
        return "sse_starlette.sse.AppStatus.should_exit is gone"
    return None


def _check_h11_protocol() -> str | None:
    # Connection guard: uvicorn's H11Protocol keeps its h11.Connection in `conn` and its asyncio transport in
    # `transport`; connection_made/data_received/on_response_complete/connection_lost are called as an
    # asyncio.Protocol's would be, and `uvicorn.Config(http=<class>)` takes a protocol class.
    if not issubclass(H11Protocol, asyncio.Protocol):
        return "uvicorn's H11Protocol is no longer an asyncio.Protocol"
    if not _assigns(H11Protocol.__init__, "conn", "transport"):
        return "uvicorn's H11Protocol no longer keeps `conn` and `transport`"
    for method in ("connection_made", "data_received", "on_response_complete", "connection_lost"):
        if not callable(getattr(H11Protocol, method, None)):
            return f"uvicorn's H11Protocol.{method} is gone"
    if not hasattr(h11.Connection, "their_state") or not hasattr(h11.Connection, "trailing_data"):
        return "h11.Connection.their_state or trailing_data is gone"
    return None


CHECKS: list[tuple[str, Callable[[], str | None]]] = [
    ("mcp", _check_lowlevel_server),
    ("mcp", _check_stdio_server),
    ("mcp", _check_http_sub_apps),
    ("mcp", _check_sessions),
    ("uvicorn", _check_uvicorn_signals),
    ("sse-starlette", _check_sse_shutdown),
    ("uvicorn", _check_h11_protocol),
]


def check_all() -> None:
    """Raise UpstreamChanged with one line for the first assumption that no longer holds."""
    for package, check in CHECKS:
        problem = check()
        if problem is not None:
            label = "mcp SDK" if package == "mcp" else package
            raise UpstreamChanged(
                f"{label} changed: {problem} (installed: {package} {version(package)}; reinstall the version "
                f"pyproject.toml pins)"
            )


# -- the shims -----------------------------------------------------------------------------------------------------


async def run_lowlevel(
    mcp: MCPServer, read_stream: ReadStream[SessionMessage | Exception], write_stream: WriteStream[SessionMessage]
) -> None:
    """Serve one MCP connection over the given streams (what run_stdio_async does, with our streams)."""
    lowlevel: Server[Any] = mcp._lowlevel_server
    await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def open_sessions(manager: StreamableHTTPSessionManager) -> Mapping[str, StreamableHTTPServerTransport]:
    """The streamable-HTTP sessions open right now, by session id (read-only view)."""
    return manager._server_instances


class QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: it would re-raise SIGTERM after serving, skipping our cleanup."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConnectionWatcher(Protocol):
    """What the connection guard (ltms.server.connections) is told about each HTTP connection."""

    def opened(self, connection: Any) -> None: ...
    def waiting(self, connection: Any) -> None: ...
    def busy(self, connection: Any) -> None: ...
    def closed(self, connection: Any) -> None: ...


class WatchedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, reporting to `watcher` when a connection opens, starts waiting for a request's
    headers (a new connection, or a kept-alive one after its response), has received them, and closes."""

    watcher: ConnectionWatcher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.watcher.opened(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._report()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._report()

    def connection_lost(self, exc: Exception | None) -> None:
        self.watcher.closed(self)
        super().connection_lost(exc)

    def _report(self) -> None:
        # h11 is IDLE on the client's side until a request's headers are complete.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.watcher.waiting(self)
        else:
            self.watcher.busy(self)

    @property
    def partial_request(self) -> bool:
        """Whether some bytes of a request (but not all its headers) have arrived."""
        return bool(self.conn.trailing_data[0])

    def drop(self, reply: bytes = b"") -> None:
        """Close the connection, after writing `reply` (raw HTTP bytes) if given."""
        if not self.transport.is_closing():
            if reply:
                self.transport.write(reply)
            self.transport.close()


def watched_h11_protocol(watcher: ConnectionWatcher) -> type[asyncio.Protocol]:
    """The watched protocol class bound to `watcher` (uvicorn instantiates the class itself)."""
    return type("BoundWatchedH11Protocol", (WatchedH11Protocol,), {"watcher": watcher})


def lifted_routes(*apps: Starlette) -> list[BaseRoute]:
    """The routes of SDK-built apps, for one app of ours; a path that two of them carry is kept once (the SDK
    adds custom routes to both its apps)."""
    routes: list[BaseRoute] = []
    seen: set[str | None] = set()
    for app in apps:
        for route in app.routes:
            path = getattr(route, "path", None)
            if path not in seen:
                seen.add(path)
                routes.append(route)
    return routes


def lifted_middleware(app: Starlette) -> list[Middleware]:
    """The middleware an SDK-built app carries: with bearer auth, the authentication middleware (without it,
    every request to the lifted routes would be a 401)."""
    return list(app.user_middleware)


class OneResponsePerRequest:
    """ASGI middleware. Relies on nothing but ASGI; it exists because the SDK's SSE endpoint, once the server ends
    its stream (at shutdown), answers the request a second time with an empty `Response()`, which uvicorn reports
    as an exception. The second start is dropped; its empty closing body still ends the stream cleanly. Should the
    SDK stop answering twice, this never fires: nothing to check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = dropped = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, dropped
            if message["type"] == "http.response.start":
                if started:
                    dropped = True
                    return
                started = True
            elif dropped and message["type"] == "http.response.body" and message.get("body"):
                return  # the second response's body must not leak into the first
            await send(message)

        await self.app(scope, receive, guarded_send)


def end_sse_streams() -> None:
    """Tell sse-starlette to end its open streams (shutdown has begun)."""
    AppStatus.should_exit = True


check_all()
