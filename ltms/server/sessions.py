"""Bounds on streamable-HTTP sessions, so clients that open sessions and walk away cannot lock out new ones.

The SDK ends a session after an idle period (no request in flight, no open event stream; LTMC sets it to
`LTMC_SESSION_IDLE_SECONDS`) and, at its session limit, answers every new client 503 until one ends. Here, before
a request that opens a session:

- a client (a remote address) at `max_per_client` sessions has one of its own idle sessions ended;
- at `max_sessions` sessions in all, an idle session is ended;
- the session ended is one never used after its handshake if there is one (abandoned at once), else the least
  recently used;
- only if every session concerned is busy (a request in flight or an event stream open) is the new one refused.

A live client keeps its session busy (the SDK client holds an event stream open), so it is not the one ended;
an abandoned session costs memory (~40 KiB) until it is idle long enough or makes room.
"""

from __future__ import annotations

import logging
import math

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltms.server.log_limits import CountingReport
from ltms.server.sdk_compat import open_sessions

log = logging.getLogger(__name__)

_SESSION_HEADER = MCP_SESSION_ID_HEADER.lower()


def _idle_until(transport: StreamableHTTPServerTransport) -> float | None:
    """When the session's idle period ends (earlier = less recently used); None while it is busy or ending."""
    scope = transport.idle_scope
    if scope is None or scope.cancel_called or transport.is_terminated or not math.isfinite(scope.deadline):
        return None
    return scope.deadline


class SessionLimiter:
    """ASGI middleware in front of the streamable-HTTP endpoint (after authentication has run)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        manager: StreamableHTTPSessionManager,
        path: str,
        max_sessions: int,
        max_per_client: int,
        auth_required: bool,
    ) -> None:
        self.app = app
        self.manager = manager
        self.path = path
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.auth_required = auth_required
        self._owners: dict[str, str] = {}  # session id -> client address
        self._uses: dict[str, int] = {}  # session id -> requests after the one that opened it
        self._report = CountingReport(
            log,
            f"streamable-HTTP sessions (limit {max_sessions}, {max_per_client} per client): %s",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._opens_session(scope):
            if scope["type"] == "http" and scope["path"] == self.path:
                session_id = Headers(scope=scope).get(_SESSION_HEADER)
                if session_id in self._uses:
                    self._uses[session_id] += 1
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        if not self._make_room(client):
            self._report.note("new ones refused (every session busy)")
            await _refusal()(scope, receive, send)
            return

        async def note_session(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = Headers(raw=message.get("headers", [])).get(_SESSION_HEADER)
                if session_id:
                    self._owners[session_id] = client
                    self._uses[session_id] = 0
            await send(message)

        await self.app(scope, receive, note_session)

    def _opens_session(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return False
        headers = Headers(scope=scope)
        if _SESSION_HEADER in headers:
            return False
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False  # the stateless 2026 era: no session
        return not self.auth_required or isinstance(scope.get("user"), AuthenticatedUser)

    def _make_room(self, client: str) -> bool:
        """End idle sessions until `client` may open one more; False if that is impossible."""
        sessions = open_sessions(self.manager)
        for session_id in [s for s in self._owners if s not in sessions]:
            del self._owners[session_id]
            self._uses.pop(session_id, None)
        live = {sid: t for sid, t in sessions.items() if not _ending(t)}
        mine = [sid for sid in live if self._owners.get(sid) == client]
        if len(mine) >= self.max_per_client:
            if not self._end_least_recently_used(live, mine):
                return False
            self._report.note(f"idle ended (a client over {self.max_per_client})")
        if len(live) >= self.max_sessions:
            if not self._end_least_recently_used(live, list(live)):
                return False
            self._report.note("idle ended (at the limit)")
        return True

    def _end_least_recently_used(self, live: dict[str, StreamableHTTPServerTransport], candidates: list[str]) -> bool:
        """End the idle session least worth keeping: one never used after its handshake (an `initialized`
        notification at most) before one in use, then the least recently used."""
        idle = [
            (self._uses.get(sid, 0) > 1, until, sid)
            for sid in candidates
            if (until := _idle_until(live[sid])) is not None
        ]
        if not idle:
            return False
        *_, session_id = min(idle)
        transport = live.pop(session_id)
        assert transport.idle_scope is not None
        transport.idle_scope.cancel()  # the SDK ends the session as if its idle period had run out
        return True


def _ending(transport: StreamableHTTPServerTransport) -> bool:
    return transport.is_terminated or (transport.idle_scope is not None and transport.idle_scope.cancel_called)


def live_sessions(manager: StreamableHTTPSessionManager) -> int:
    """Sessions open and not on their way out."""
    return sum(1 for transport in list(open_sessions(manager).values()) if not _ending(transport))


def _refusal() -> Response:
    error = ErrorData(code=INTERNAL_ERROR, message="too many open sessions, and every one is busy: try again later")
    body = JSONRPCError(jsonrpc="2.0", id=None, error=error).model_dump_json(by_alias=True, exclude_unset=True)
    return Response(body, status_code=503, media_type="application/json")
