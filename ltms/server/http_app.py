"""One Starlette app for every HTTP transport: streamable HTTP at /mcp, legacy SSE at /sse + /messages/, and
GET /health.

Both MCP sub-apps come from the same MCPServer; their routes are merged into one app, and the streamable
session manager runs in that app's lifespan (the SDK needs it running, and it may be entered only once).
App-wide middleware, outermost first: one response per request, Host/Origin checks (every route), the SDK's
bearer authentication, a 401 that says what is wrong, and the session limits in front of /mcp.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ltms import __version__
from ltms.config import Settings
from ltms.server.host_check import HostOriginGuard, HostPolicy, allowed_host_names
from ltms.server.sdk_compat import OneResponsePerRequest, lifted_middleware, lifted_routes
from ltms.server.sessions import SessionLimiter, live_sessions
from ltms.server.tools import build_server
from ltms.service import MemoryService
from ltms.web import web_routes

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
MESSAGES_PATH = "/messages/"
HEALTH_PATH = "/health"
AUTH_FAILED = "bearer token missing or wrong"


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
    issuer = AnyHttpUrl(f"http://{host or '127.0.0.1'}:{settings.http_port}")
    return AuthSettings(issuer_url=issuer, resource_server_url=None)


def build_mcp(service: MemoryService, settings: Settings, *, http: bool) -> MCPServer:
    """The MCP server for this process: with bearer auth when HTTP is served and LTMC_AUTH_TOKEN is set."""
    verifier = StaticTokenVerifier(settings.auth_token) if settings.auth_token and http else None
    return build_server(service, settings, token_verifier=verifier, auth=auth_settings(settings) if verifier else None)


def _authenticated(scope: Scope) -> bool:
    return isinstance(scope.get("user"), AuthenticatedUser)


class BearerRequired:
    """ASGI middleware (after the SDK's authentication): a request to an MCP path without the right token gets a
    401 saying so. The SDK's own 401 ("Authentication required", error="invalid_token") reads like an OAuth
    problem: its client shows "Server returned an error response" and the MCP Inspector starts OAuth discovery.
    This body is a JSON-RPC error, which the SDK client passes on to the caller as it is."""

    def __init__(self, app: ASGIApp, paths: Sequence[str]) -> None:
        self.app = app
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _authenticated(scope) or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        body = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32001, "message": f"{AUTH_FAILED}: send Authorization: Bearer <LTMC_AUTH_TOKEN>"},
        }
        challenge = f'Bearer realm="ltmc", error="invalid_token", error_description="{AUTH_FAILED}"'
        response = Response(
            json.dumps(body), status_code=401, media_type="application/json", headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)

    def _protected(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.paths)


# -- limits -------------------------------------------------------------------------------------------------------


def max_body_bytes(settings: Settings) -> int:
    # The largest legitimate request is a store at the text and metadata limits, JSON-escaped (up to 6x).
    needed = 6 * settings.max_text_bytes + 2 * settings.max_metadata_bytes + 64 * 1024
    return max(DEFAULT_MAX_REQUEST_BODY_SIZE, needed)


def host_policy(settings: Settings, ports: Sequence[int] = ()) -> HostPolicy:
    return HostPolicy(
        allowed_host_names(settings.http_host),
        ports or [settings.http_port],
        extra_hosts=settings.allowed_hosts,
        extra_origins=settings.allowed_origins,
    )


# -- the app -----------------------------------------------------------------------------------------------------


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


def build_http_app(mcp: MCPServer, service: MemoryService, settings: Settings, ports: Sequence[int] = ()) -> Starlette:
    """The HTTP app; `ports` are the ports the server listens on (the Host and Origin headers must name one)."""
    body_limit = max_body_bytes(settings)
    # Host and Origin are checked once, app-wide, exactly (HostOriginGuard); the SDK's check (prefix matching,
    # in its handlers only) is off. It still refuses a POST that is not JSON.
    sdk_security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    streamable = mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=sdk_security,
        max_request_body_size=body_limit,
        host=settings.http_host,
        session_idle_timeout=settings.session_idle_seconds,
        # SessionLimiter keeps to max_sessions; the SDK's cap only catches openings that race each other.
        max_sessions=settings.max_sessions + settings.http_max_connections,
    )
    sse = mcp.sse_app(
        sse_path=SSE_PATH,
        message_path=MESSAGES_PATH,
        transport_security=sdk_security,
        max_request_body_size=body_limit,
        host=settings.http_host,
    )
    auth_required = bool(lifted_middleware(streamable))

    async def health(request: Request) -> Response:
        if auth_required and not _authenticated(request.scope):
            return JSONResponse({"status": "ok"})  # up; the rest is for token holders
        try:
            payload = await anyio.to_thread.run_sync(health_payload, service, settings)
        except Exception:
            log.exception("health check failed")
            return JSONResponse({"status": "error", "version": __version__}, status_code=503)
        payload["http_sessions"] = live_sessions(mcp.session_manager)  # streamable-HTTP sessions open
        return JSONResponse(payload)

    routes: list[BaseRoute] = [Route(HEALTH_PATH, health, methods=["GET"])]
    routes += [route for route in lifted_routes(streamable, sse) if getattr(route, "path", None) != HEALTH_PATH]
    routes += web_routes(service, settings)  # the web page under /ui

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    middleware = [
        Middleware(OneResponsePerRequest),
        Middleware(HostOriginGuard, policy=host_policy(settings, ports)),
        *lifted_middleware(streamable),  # with bearer auth: sets request.user for every route
    ]
    if auth_required:
        middleware.append(Middleware(BearerRequired, paths=[MCP_PATH, SSE_PATH, MESSAGES_PATH]))
    middleware.append(
        Middleware(
            SessionLimiter,
            manager=mcp.session_manager,
            path=MCP_PATH,
            max_sessions=settings.max_sessions,
            max_per_client=settings.max_sessions_per_client,
            auth_required=auth_required,
        )
    )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
