"""A bound on HTTP connections, so a flood of slow or idle ones cannot starve the server (slowloris).

uvicorn has no timeout for a request's headers, and its `limit_concurrency` answers 503 to *every* new request
once the limit is reached, the attacker's and the real client's alike. Here instead:

- a connection gets `header_timeout` seconds to send a request's headers, however slowly the bytes trickle in,
  counted from when it opened (a kept-alive one: from the first byte of its next request; idle, uvicorn's
  keep-alive timeout closes it); then it is closed (with a 408 if it had sent part of a request);
- over `max_connections` open connections, the ones that have waited longest for a request's headers are closed
  (new connections first, then kept-alive ones), but only once they have waited `TRIM_AFTER` seconds: a new
  connection cannot be told from an attacker's until its first bytes are read, and a real client sends its whole
  request at once, so it is busy by then and kept;
- over `ceiling` (the cap plus one accept burst) a connection is closed at once for each new one: one caught
  sending its headers slowly, else one silent for `TRIM_AFTER` seconds; past the hard limit (one more accept
  burst, what the open-file limit was sized for) the longest-waiting new one, then a kept-alive idle one, or if
  every connection is busy, the newcomer gets a 503;
- what was closed is logged at most once per `LOG_INTERVAL` seconds, as counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ltms.server.log_limits import CountingReport

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
TRIM_AFTER = 0.2  # seconds: far longer than a real client takes to send its headers once connected
FD_RESERVE = 64  # file descriptors kept for the database, index, log and stdio (an idle server uses ~12)
ACCEPT_BACKLOG = 64  # the listen backlog, and the most connections accepted in one go before the guard sees them


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


@dataclass
class _Waiting:
    since: float  # event-loop time
    timer: asyncio.TimerHandle | None  # closes the connection at the header timeout


class ConnectionGuard:
    """Told by the HTTP protocol about every connection; closes the ones that hold the server up."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.ceiling = max_connections + ACCEPT_BACKLOG
        self.hard_limit = max_connections + 2 * ACCEPT_BACKLOG
        self.header_timeout = header_timeout
        self._open: set[Connection] = set()
        # Connections waiting for a request's headers, longest-waiting first. New ones (no request yet: a
        # slowloris connection is one) are closed before kept-alive ones that were served and wait for their
        # next request (closing one of those races the client reusing it).
        self._new: dict[Connection, _Waiting] = {}
        self._kept: dict[Connection, _Waiting] = {}
        self._trim: asyncio.TimerHandle | None = None
        self._last_trim = float("-inf")
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
        self._new[connection] = self._waiting_since_now(connection, timed=True)
        count = len(self._open)
        if count <= self.max_connections:
            return
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER, self._regular_trim)
        if count <= self.ceiling:
            return
        victim = self._victim(but=connection, young_too=count > self.hard_limit)
        if victim is not None:
            self._drop(victim, b"", "closed to make room")
        elif count > self.hard_limit:  # every other connection is busy with a request: this one cannot be served
            self._drop(connection, FULL_REPLY, "refused")

    def waiting(self, connection: Connection) -> None:
        """Kept alive after a response. Idle, it is uvicorn's keep-alive timeout that closes it; the header
        timeout starts with the first bytes of its next request."""
        if connection in self._new or connection not in self._open:
            return
        kept = self._kept.get(connection)
        if kept is None:
            self._kept[connection] = self._waiting_since_now(connection, timed=connection.partial_request)
        elif kept.timer is None and connection.partial_request:
            kept.timer = self._waiting_since_now(connection, timed=True).timer

    def busy(self, connection: Connection) -> None:
        entry = self._new.pop(connection, None) or self._kept.pop(connection, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()

    def closed(self, connection: Connection) -> None:
        self.busy(connection)
        self._open.discard(connection)

    def _waiting_since_now(self, connection: Connection, timed: bool) -> _Waiting:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.header_timeout, self._timed_out, connection) if timed else None
        return _Waiting(loop.time(), timer)

    def _victim(self, but: Connection, young_too: bool) -> Connection | None:
        """The connection to close to make room at once, longest-waiting first in each group: one that has sent
        part of a request's headers (a new one, then a kept-alive one); a new one silent for TRIM_AFTER seconds;
        and only at the hard limit (`young_too`), a new one that may not have been read yet (a real client's
        request could be on its way), and last a kept-alive idle one (it has been served: it is a client's)."""
        oldest_allowed = asyncio.get_running_loop().time() - TRIM_AFTER
        groups: list[Iterator[Connection]] = [
            (c for c in self._new if c.partial_request),
            (c for c in self._kept if c.partial_request),
            (c for c, waiting in self._new.items() if waiting.since <= oldest_allowed),
        ]
        if young_too:
            groups += [iter(self._new), iter(self._kept)]
        return next((c for group in groups for c in group if c is not but), None)

    def _regular_trim(self) -> None:
        """A new connection is judged only once it has waited TRIM_AFTER seconds and was already open at the
        previous trim, which leaves a real client ample time to send its request."""
        self._trim = None
        now = asyncio.get_running_loop().time()
        judged_before = min(now - TRIM_AFTER, self._last_trim)
        self._last_trim = now
        self._trim_now(judged_before)
        if len(self._open) > self.max_connections and (self._new or self._kept):
            self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER, self._regular_trim)

    def _trim_now(self, judged_before: float) -> None:
        """Close the longest-waiting connections until the cap holds, counting the new ones too young to judge
        (waiting since after `judged_before`) as if they were gone: they are busy or closed by the next trim."""
        young = sum(1 for waiting in self._new.values() if waiting.since > judged_before)
        for queue in (self._new, self._kept):
            for connection, waiting in list(queue.items()):
                if len(self._open) - young <= self.max_connections or waiting.since > judged_before:
                    break
                self._drop(connection, b"", "closed to make room")

    def _timed_out(self, connection: Connection) -> None:
        if connection in self._new or connection in self._kept:
            self.busy(connection)
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
    needed = wanted + FD_RESERVE + 3 * ACCEPT_BACKLOG  # the hard limit, plus one accept burst not yet seen
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
    fitted = max(8, soft - FD_RESERVE - 3 * ACCEPT_BACKLOG)
    log.warning(
        "the open-file limit (%d) allows %d HTTP connections, not %d (LTMC_HTTP_MAX_CONNECTIONS): raise it with "
        "ulimit -n",
        soft,
        fitted,
        wanted,
    )
    return fitted
