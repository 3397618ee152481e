"""DNS-rebinding protection for every HTTP route: the Host header and any Origin header must name this server
exactly, host and port.

The SDK's own check runs inside its handlers only and compares prefixes ("localhost:*" lets any port through,
so a page served from another local port could call the API). This middleware covers the whole app (/health,
/mcp, /sse, /messages/ and any route added later) and compares exact (scheme, host, port) values:

- Host: a known name with no port (a reverse proxy on the default port) or with one of the ports the server
  listens on; an LTMC_ALLOWED_HOSTS entry that carries a port matches exactly that port.
- Origin (sent by browsers): absent, or http(s) on a known name and a listening port, or a known non-loopback
  name on the scheme's default port (behind a proxy), or exactly one of LTMC_ALLOWED_ORIGINS.

Wrong Host -> 421, foreign Origin -> 403, as the SDK answered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")
_AUTHORITY = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#@\s]+)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_authority(value: str) -> tuple[str, int | None] | None:
    """'Host:port' -> (lowercase host, port or None); None if it is not exactly a host and optional port."""
    match = _AUTHORITY.fullmatch(value.strip().lower())
    if match is None:
        return None
    port = match["port"]
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return match["host"], int(port) if port is not None else None


def split_origin(value: str) -> tuple[str, str, int] | None:
    """'scheme://host[:port]' -> (scheme, host, port with the scheme's default filled in); None otherwise."""
    match = _ORIGIN.fullmatch(value.strip().lower())
    if match is None:
        return None
    authority = split_authority(match["authority"])
    if authority is None:
        return None
    host, port = authority
    return match["scheme"], host, port if port is not None else _DEFAULT_PORTS[match["scheme"]]


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable from elsewhere
        return False


def allowed_host_names(listen_host: str) -> list[str]:
    """Host names a request may carry in its Host header: loopback always, plus what we listen on."""
    names = list(LOOPBACK_NAMES)
    if listen_host in WILDCARDS:
        names += _own_names()
    elif not is_loopback(listen_host):
        names.append(f"[{listen_host}]" if ":" in listen_host else listen_host)
    return list(dict.fromkeys(name.lower() for name in names))


def _own_names() -> list[str]:
    names = [socket.gethostname(), socket.getfqdn()]
    with contextlib.suppress(OSError):
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    return [name for name in names if name]


class HostPolicy:
    """Which Host and Origin values this server answers to."""

    def __init__(
        self,
        names: Iterable[str],
        ports: Iterable[int],
        extra_hosts: Iterable[str] = (),
        extra_origins: Iterable[str] = (),
    ) -> None:
        self.names = {name.lower() for name in names}
        self.ports = set(ports)
        self.exact_hosts: set[tuple[str, int | None]] = set()
        for entry in extra_hosts:
            parsed = split_authority(entry)
            if parsed is None:
                log.warning("ignoring LTMC_ALLOWED_HOSTS entry %r: not a host name with an optional port", entry)
            elif parsed[1] is None:
                self.names.add(parsed[0])
            else:
                self.exact_hosts.add(parsed)
        self.exact_origins: set[tuple[str, str, int]] = set()
        for entry in extra_origins:
            origin = split_origin(entry)
            if origin is None:
                log.warning("ignoring LTMC_ALLOWED_ORIGINS entry %r: not scheme://host[:port]", entry)
            else:
                self.exact_origins.add(origin)

    def host_ok(self, value: str | None) -> bool:
        parsed = split_authority(value) if value else None
        if parsed is None:
            return False
        host, port = parsed
        if parsed in self.exact_hosts:
            return True
        return host in self.names and (port is None or port in self.ports)

    def origin_ok(self, value: str | None) -> bool:
        if value is None:
            return True  # not a browser, or a same-origin GET: nothing to check
        origin = split_origin(value)
        if origin is None:
            return False  # includes "null" (sandboxed frames, files)
        if origin in self.exact_origins:
            return True
        scheme, host, port = origin
        if (host, port) in self.exact_hosts:
            return True
        if host not in self.names:
            return False
        # A default port is a reverse proxy's; on a loopback name it would be some other local web server.
        return port in self.ports or (port == _DEFAULT_PORTS[scheme] and not is_loopback(host))


class HostOriginGuard:
    """ASGI middleware: refuse any request (HTTP or websocket) whose Host or Origin is not this server's."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if len(headers.getlist("host")) != 1 or not self.policy.host_ok(headers.get("host")):
            await PlainTextResponse("Invalid Host header", status_code=421)(scope, receive, send)
            return
        if len(headers.getlist("origin")) > 1 or not self.policy.origin_ok(headers.get("origin")):
            await PlainTextResponse("Invalid Origin header", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
