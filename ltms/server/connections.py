"""A bound on HTTP connections, so a flood of slow or idle ones cannot starve the server (slowloris).

uvicorn has no timeout for a request's headers, and its `limit_concurrency` answers 503 to *every* new request
once the limit is reached, the attacker's and the real client's alike. Here instead:

- a connection gets `header_timeout` seconds to send a request's headers, counted from when it opened (or its
  previous response ended), however slowly the bytes trickle in; then it is closed (with a 408 if it had sent
  part of a request);
- at `max_connections` open connections, a new connection closes the oldest one still waiting for its headers,
  so a client that sends its request at once is served while the flood is on; only when every connection is in
  the middle of a request (or holds an event stream) does the newcomer get a 503;
- what was closed is logged at most once per `LOG_INTERVAL` seconds, as counts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ltms.server.log_limits import CountingReport

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
# File descriptors kept free for the database, index, log, stdio and a burst of accepts not yet counted.
FD_RESERVE = 128
ACCEPT_BACKLOG = 128


def _reply(status: str, body: str) -> bytes:
    """A complete raw HTTP response that closes the connection (written before any request was parsed)."""
    content = body.encode()
    head = f"HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n"
    return f"{head}content-length: {len(content)}\r\n\r\n".encode() + content


TIMED_OUT_REPLY = _reply("408 Request Timeout", "request headers took too long\n")
FULL_REPLY = _reply("503 Service Unavailable", "server busy: too many open connections\n")


class Connection(Protocol):
    """What the guard needs from a connection (ltms.server.sdk_compat.watched_h11_protocol provides it)."""

    @property
    def partial_request(self) -> bool: ...

    def drop(self, reply: bytes = b"") -> None: ...


class ConnectionGuard:
    """Told by the HTTP protocol about every connection; closes the ones that hold the server up."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._open: set[Connection] = set()
        # Connections waiting for a request's headers, oldest first, with the timer that closes them.
        self._waiting: dict[Connection, asyncio.TimerHandle] = {}
        self._report = CountingReport(
            log,
            f"HTTP connections closed (limit {max_connections} connections, {header_timeout:g}s for request "
            f"headers): %s",
            LOG_INTERVAL,
        )

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def opened(self, connection: Connection) -> None:
        self._open.add(connection)
        self.waiting(connection)
        if len(self._open) <= self.max_connections:
            return
        victim = next((c for c in self._waiting if c is not connection), None)
        if victim is not None:
            self._drop(victim, b"", "closed to make room")
        else:  # every other connection is busy with a request: this one cannot be served
            self._drop(connection, FULL_REPLY, "refused")

    def waiting(self, connection: Connection) -> None:
        if connection in self._waiting or connection not in self._open:
            return
        loop = asyncio.get_running_loop()
        self._waiting[connection] = loop.call_later(self.header_timeout, self._timed_out, connection)

    def busy(self, connection: Connection) -> None:
        timer = self._waiting.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def closed(self, connection: Connection) -> None:
        self.busy(connection)
        self._open.discard(connection)

    def _timed_out(self, connection: Connection) -> None:
        if self._waiting.pop(connection, None) is not None:
            self._drop(connection, TIMED_OUT_REPLY if connection.partial_request else b"", "timed out")

    def _drop(self, connection: Connection, reply: bytes, why: str) -> None:
        self.closed(connection)  # forget it now: its connection_lost comes later
        connection.drop(reply)
        self._report.note(why)


def connection_limit(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open enough files: the soft limit is raised as far as the hard
    one allows, and what still does not fit is taken off the cap (an accept that fails for want of a file
    descriptor stalls the listening socket for a second and logs an error each time)."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows): nothing to check
        return wanted
    needed = wanted + FD_RESERVE + ACCEPT_BACKLOG
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, raised, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(8, soft - FD_RESERVE - ACCEPT_BACKLOG)
    log.warning(
        "the open-file limit (%d) allows %d HTTP connections, not %d (LTMC_HTTP_MAX_CONNECTIONS): raise it with "
        "ulimit -n",
        soft,
        fitted,
        wanted,
    )
    return fitted
