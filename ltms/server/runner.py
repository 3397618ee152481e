"""`ltmc serve`: run stdio, HTTP, or both in one process around ONE MemoryService.

The service belongs to the process, not to an MCP lifespan (the SDK enters a lifespan per stdio run, per SSE
connection and per session manager). This module owns signal handling: SIGINT and SIGTERM, like stdin EOF in
stdio and dual mode, stop the transports; then the service is closed (which saves the index snapshot) and
`serve` returns 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

from ltms import __version__
from ltms.config import Settings
from ltms.errors import LTMCError
from ltms.server.connections import ACCEPT_BACKLOG, ConnectionGuard, connection_limit
from ltms.server.host_check import is_loopback
from ltms.server.http_app import HEALTH_PATH, MCP_PATH, SSE_PATH, build_http_app, build_mcp, max_body_bytes
from ltms.server.log_limits import rate_limited_logs
from ltms.server.sdk_compat import QuietUvicorn, end_sse_streams, watched_h11_protocol
from ltms.server.stdio import serve_stdio
from ltms.service import MemoryService

log = logging.getLogger(__name__)

TRANSPORTS = ("stdio", "http", "dual")
# How long open HTTP requests and streams get to finish once shutdown starts.
HTTP_GRACE_SECONDS = 3
KEEP_ALIVE_SECONDS = 15
MIN_TOKEN_CHARS = 16


class StartupError(LTMCError):
    """The server cannot start as configured (unsafe exposure, port in use, ...)."""


def serve(settings: Settings, transport: str) -> int:
    """Run the server until a signal or (stdio, dual) stdin EOF. Returns the exit status: 0 on clean shutdown."""
    if transport not in TRANSPORTS:
        raise StartupError(f"unknown transport {transport!r}: choose one of {', '.join(TRANSPORTS)}")
    uses_http = transport in ("http", "dual")
    if uses_http:
        check_exposure(settings)
    stop = _StopRequest()
    with stop.installed():
        sockets = bind_sockets(settings.http_host, settings.http_port) if uses_http else []
        service: MemoryService | None = None
        try:
            service = MemoryService(settings)
            if stop.requested:
                log.info("stopping: a signal arrived during start-up")
                return 0
            # What HTTP clients can make uvicorn, asyncio or the SDK log is rate-limited (a flood made 70 MB/min).
            with rate_limited_logs() if uses_http else contextlib.nullcontext():
                return anyio.run(_serve_async, service, settings, transport, sockets, stop)
        finally:
            # Signals during the final snapshot save are noted, not obeyed (a second one forces the exit).
            stop.reinstall()
            for sock in sockets:
                sock.close()
            if service is not None:
                service.close()
                log.info("ltmc stopped")


def check_exposure(settings: Settings) -> None:
    host = settings.http_host
    if not is_loopback(host) and not settings.auth_token and not settings.allow_insecure:
        raise StartupError(
            f"refusing to listen on {host!r}, beyond loopback, without authentication: set LTMC_AUTH_TOKEN to "
            f"a long random secret, or pass --allow-insecure (LTMC_ALLOW_INSECURE=1) if something else "
            f"protects this port"
        )
    if settings.auth_token and len(settings.auth_token) < MIN_TOKEN_CHARS:
        log.warning("LTMC_AUTH_TOKEN is shorter than %d characters: use a long random secret", MIN_TOKEN_CHARS)
    if not is_loopback(host) and not settings.auth_token:
        log.warning("listening on %s without authentication (--allow-insecure)", host)


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind the HTTP port before anything slow happens, so a taken port fails fast with a clear message.

    A name such as localhost may resolve to several addresses (127.0.0.1 and ::1): each is bound, as uvicorn
    would; an address this machine cannot bind (IPv6 switched off) is skipped if another one worked."""
    if not 0 <= port <= 65535:  # Settings bounds LTMC_HTTP_PORT and --port; this is for any other caller
        raise StartupError(f"cannot listen on {host}:{port}: the port must be between 0 and 65535")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sockets: list[socket.socket] = []
    failures: list[str] = []
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        if port:  # with port 0, every address gets the port the first one was given
            address = (address[0], port, *address[2:])
        try:
            sock = _bind(family, kind, proto, address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                for bound in sockets:
                    bound.close()
                raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
            failures.append(f"{address[0]}: {exc.strerror or exc}")
            continue
        port = sock.getsockname()[1]
        sockets.append(sock)
    if not sockets:
        raise StartupError(f"cannot listen on {host}:{port}: {'; '.join(failures)}")
    for failure in failures:
        log.warning("not listening on %s", failure)
    return sockets


def _bind(family: socket.AddressFamily, kind: socket.SocketKind, proto: int, address: tuple[Any, ...]) -> socket.socket:
    """One listening address, bound (closed again when binding fails)."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address is bound separately
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


# -- signals ----------------------------------------------------------------------------------------------------


@dataclass
class _StopRequest:
    """Signal handling outside the event loop (start-up, final save): note the first signal, force on the second."""

    requested: bool = False
    _previous: dict[int, object] = field(default_factory=dict)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second signal: stop waiting
        self.requested = True
        log.info("received %s: stopping as soon as it is safe", signal.Signals(signum).name)

    def reinstall(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self.handle)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield
            return
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.reinstall()
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]


# -- the event loop ---------------------------------------------------------------------------------------------


async def _serve_async(
    service: MemoryService, settings: Settings, transport: str, sockets: list[socket.socket], stop: _StopRequest
) -> int:
    mcp = build_mcp(service, settings, http=bool(sockets))
    done = anyio.Event()
    status = 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, done, stop)
        http_server: QuietUvicorn | None = None
        http_stopped = anyio.Event()
        if sockets:
            http_server = server = _http_server(mcp, service, settings, sockets)

            async def run_http() -> None:
                nonlocal status
                try:
                    await server.serve(sockets=sockets)
                except (Exception, SystemExit):  # uvicorn exits on a failed start-up
                    log.exception("the HTTP server failed")
                    status = 1
                finally:
                    if not done.is_set():  # it stopped without being asked
                        status = status or 1
                    http_stopped.set()
                    done.set()

            tg.start_soon(run_http)
            _log_listening(sockets, bool(settings.auth_token))
        if transport in ("stdio", "dual"):
            tg.start_soon(_run_stdio, mcp, max_body_bytes(settings), done)
        log.info(
            "ltmc %s serving over %s (%s)", __version__, transport, "read-only" if settings.read_only else "read-write"
        )

        await done.wait()
        if http_server is not None:
            http_server.should_exit = True
            with _quiet_stream_endings():
                end_sse_streams()
                with anyio.move_on_after(HTTP_GRACE_SECONDS + 2):
                    await http_stopped.wait()
        tg.cancel_scope.cancel()  # abandons the stdin reader and the signal watcher
    return status


def _http_server(
    mcp: MCPServer, service: MemoryService, settings: Settings, sockets: list[socket.socket]
) -> QuietUvicorn:
    ports = sorted({sock.getsockname()[1] for sock in sockets})
    app = build_http_app(mcp, service, settings, ports)
    guard = ConnectionGuard(connection_limit(settings.http_max_connections), settings.http_header_timeout)
    config = uvicorn.Config(
        app,
        http=watched_h11_protocol(guard),  # header timeout and connection cap (ltms.server.connections)
        backlog=ACCEPT_BACKLOG,  # also the most connections accepted in one go, before the guard sees them
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers at most (h11's default, made explicit)
        log_config=None,
        access_log=settings.log_level == "DEBUG",
        lifespan="on",
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
        # Longer than clients keep an idle connection (httpx: 5 s), so the client closes it first: a server-side
        # close races the client reusing the connection, and the client's request fails.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ws="none",
        server_header=False,
    )
    return QuietUvicorn(config)


async def _run_stdio(mcp: MCPServer, max_message_bytes: int, done: anyio.Event) -> None:
    try:
        await serve_stdio(mcp, max_message_bytes)  # the same bound as an HTTP request body
        log.info("stdin closed: stopping")
    finally:
        done.set()


async def _watch_signals(done: anyio.Event, stop: _StopRequest) -> None:
    if sys.platform == "win32":  # no signal receiver there; Ctrl+C arrives as KeyboardInterrupt
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if stop.requested:  # a signal arrived before this receiver replaced the start-up handler
            done.set()
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            done.set()


class _DropIncompleteResponse(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable returned without completing response")


@contextlib.contextmanager
def _quiet_stream_endings() -> Iterator[None]:
    # Event streams ended by shutdown make uvicorn log this at ERROR; at shutdown it is expected, not an error.
    logger, quiet = logging.getLogger("uvicorn.error"), _DropIncompleteResponse()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _log_listening(sockets: list[socket.socket], with_auth: bool) -> None:
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        log.info(
            "HTTP on %s: streamable %s, SSE %s, health %s (auth: %s; DNS-rebinding protection on)",
            base,
            MCP_PATH,
            SSE_PATH,
            HEALTH_PATH,
            "bearer token" if with_auth else "none",
        )
