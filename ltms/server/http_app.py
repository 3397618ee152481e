"""One Starlette app for every HTTP transport: streamable HTTP at /mcp, legacy SSE at /sse + /messages/, and
an open GET /health.

Both MCP sub-apps come from the same MCPServer; their routes are merged into one app, and the streamable
session manager runs in that app's lifespan (the SDK needs it running, and it may be entered only once).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltms import __version__
from ltms.config import Settings
from ltms.service import MemoryService
from ltms.web import web_routes

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
MESSAGES_PATH = "/messages/"
HEALTH_PATH = "/health"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable from elsewhere
        return False


# -- bearer-token auth ----------------------------------------------------------------------------------------


class StaticTokenVerifier:
    """Accepts exactly one bearer token (LTMC_AUTH_TOKEN), compared in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode("utf-8")

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._expected):
            return AccessToken(token=token, client_id="ltmc-bearer", scopes=[])
        return None


def auth_settings(settings: Settings) -> AuthSettings:
    # The SDK wants an issuer URL; with no authorization-server provider and no resource URL it is never
    # published or contacted, so the server's own address is as good as any.
    host = settings.http_host if ":" not in settings.http_host else f"[{settings.http_host}]"
    return AuthSettings(issuer_url=f"http://{host or '127.0.0.1'}:{settings.http_port}", resource_server_url=None)


# -- DNS-rebinding protection ---------------------------------------------------------------------------------


def allowed_host_names(host: str) -> list[str]:
    """Host names a request may carry in its Host header: loopback always, plus what we listen on."""
    names = list(_LOOPBACK_NAMES)
    if host in _WILDCARDS:
        names += _own_names()
    elif not is_loopback(host):
        names.append(f"[{host}]" if ":" in host else host)
    return list(dict.fromkeys(name.lower() for name in names))


def _own_names() -> list[str]:
    names = [socket.gethostname(), socket.getfqdn()]
    with contextlib.suppress(OSError):
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    return [name for name in names if name]


def transport_security(settings: Settings) -> TransportSecuritySettings:
    names = allowed_host_names(settings.http_host) + list(settings.allowed_hosts)
    # "name:*" for direct clients; the bare name for a reverse proxy on the default port.
    hosts = [f"{name}:*" for name in names] + names
    origins = [f"{scheme}://{name}{port}" for name in names for scheme in ("http", "https") for port in (":*", "")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def max_body_bytes(settings: Settings) -> int:
    # The largest legitimate request is a store at the text and metadata limits, JSON-escaped (up to 6x).
    needed = 6 * settings.max_text_bytes + 2 * settings.max_metadata_bytes + 64 * 1024
    return max(DEFAULT_MAX_REQUEST_BODY_SIZE, needed)


# -- the app -----------------------------------------------------------------------------------------------------


class OneResponsePerRequest:
    """ASGI middleware: after the SDK's SSE endpoint streams its response and the server ends the stream (at
    shutdown), it answers the request a second time with an empty `Response()`, which uvicorn reports as an
    exception. Drop that second start; its empty closing body still ends the stream cleanly."""

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


def health_payload(service: MemoryService, settings: Settings) -> dict[str, Any]:
    stats = service.stats()
    index = stats["index"]
    return {
        "status": "degraded" if index["last_snapshot_error"] else "ok",
        "version": __version__,
        "memories": stats["memories"],
        "model": stats["model"],
        "read_only": settings.read_only,
        "index": {
            key: index[key]
            for key in (
                "state",
                "vectors",
                "unsaved_changes",
                "snapshot_saved_at",
                "snapshot_last_change",
                "last_snapshot_error",
            )
        },
        "data_dir": stats["data_dir"],
    }


def build_http_app(mcp: MCPServer, service: MemoryService, settings: Settings) -> Starlette:
    security = transport_security(settings)
    body_limit = max_body_bytes(settings)
    streamable = mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=security,
        max_request_body_size=body_limit,
        host=settings.http_host,
    )
    sse = mcp.sse_app(
        sse_path=SSE_PATH,
        message_path=MESSAGES_PATH,
        transport_security=security,
        max_request_body_size=body_limit,
        host=settings.http_host,
    )
    guard = TransportSecurityMiddleware(security)

    async def health(request: Request) -> Response:
        rejected = await guard.validate_request(request)
        if rejected is not None:
            return rejected
        try:
            payload = await anyio.to_thread.run_sync(health_payload, service, settings)
        except Exception:
            log.exception("health check failed")
            return JSONResponse({"status": "error", "version": __version__}, status_code=503)
        return JSONResponse(payload)

    routes: list[BaseRoute] = [Route(HEALTH_PATH, health, methods=["GET"])]
    seen = {HEALTH_PATH}
    for route in [*streamable.routes, *sse.routes]:
        path = getattr(route, "path", None)
        if path not in seen:  # the SDK repeats custom routes in both sub-apps
            seen.add(path)
            routes.append(route)
    routes += web_routes(service, settings)  # the web page under /ui

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    # With bearer auth the sub-apps carry the authentication middleware; without it every request is a 401.
    middleware = [Middleware(OneResponsePerRequest), *streamable.user_middleware]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
