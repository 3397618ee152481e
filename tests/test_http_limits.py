"""The pieces behind the HTTP limits, on their own: rate-limited logging (a flood made the log grow 70 MB a minute),
the connection guard's choices on a real event loop, and the connection cap fitted to the open-file limit."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ltms.server.connections import ACCEPT_BACKLOG, FULL_REPLY, TIMED_OUT_REPLY, ConnectionGuard
from ltms.server.log_limits import CountingReport, RateLimitFilter
from tests.helpers import child_env


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, message: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_each_kind_of_message_gets_through_five_times_per_window() -> None:
    clock = Clock()
    limiter = RateLimitFilter(burst=5, interval=10, clock=clock)
    passed = [limiter.filter(record("uvicorn.error", "Invalid HTTP request received.")) for _ in range(1000)]
    assert passed.count(True) == 5 and passed[:5] == [True] * 5
    assert limiter.filter(record("asyncio", "socket.accept() out of system resource"))  # another kind
    clock.now = 10.0
    later = record("uvicorn.error", "Invalid HTTP request received.")
    assert limiter.filter(later)
    assert later.getMessage() == "Invalid HTTP request received. [995 more like this held back in the last 10s]"


def test_numbers_and_session_ids_do_not_make_a_new_kind() -> None:
    limiter = RateLimitFilter(burst=2, interval=10, clock=Clock())
    messages = [f"Session {n:032x} idle timeout" for n in range(10)] + [f"port {n}" for n in range(5)]
    passed = [limiter.filter(record("mcp.server", message, logging.INFO)) for message in messages]
    assert passed == [True, True] + [False] * 8 + [True, True] + [False] * 3


def test_ltmc_own_info_lines_are_never_held_back() -> None:
    limiter = RateLimitFilter(burst=1, interval=10, clock=Clock())
    assert all(limiter.filter(record("ltms.service", "saved index snapshot", logging.INFO)) for _ in range(50))
    assert [limiter.filter(record("ltms.server", "odd", logging.WARNING)) for _ in range(3)] == [True, False, False]


def test_one_decision_per_record_whatever_the_number_of_handlers() -> None:
    limiter = RateLimitFilter(burst=1, interval=10, clock=Clock())
    first = record("uvicorn.error", "x")
    assert limiter.filter(first) and limiter.filter(first)  # a second handler asks about the same record


def test_counting_report_logs_counts_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    report = CountingReport(logging.getLogger("ltms.test"), "closed: %s", interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ltms.test"):
        for _ in range(100):
            report.note("timed out")
        clock.now = 11
        report.note("refused")
    assert [r.getMessage() for r in caplog.records] == ["closed: 1 timed out", "closed: 99 timed out, 1 refused"]


# -- the connection guard -------------------------------------------------------------------------------------------


class FakeConnection:
    """What the guard sees of a connection: whether part of a request arrived, and a way to close it."""

    def __init__(self, partial: bool = False) -> None:
        self.partial_request = partial
        self.closed_with: bytes | None = None
        self.closed = anyio.Event()

    def drop(self, reply: bytes = b"") -> None:
        self.closed_with = reply
        self.closed.set()


@pytest.mark.anyio
async def test_over_the_ceiling_a_slow_sender_makes_room_not_a_newcomer() -> None:
    guard = ConnectionGuard(max_connections=4, header_timeout=60)
    busy = [FakeConnection() for _ in range(4)]
    for connection in busy:
        guard.opened(connection)
        guard.busy(connection)  # its request is being served
    slow = [FakeConnection(partial=True) for _ in range(ACCEPT_BACKLOG)]
    for connection in slow:
        guard.opened(connection)
    assert guard.open_connections == guard.ceiling
    newcomer = FakeConnection()
    guard.opened(newcomer)  # over the ceiling: the longest-waiting slow sender goes at once
    assert slow[0].closed_with == b"" and newcomer.closed_with is None and not any(c.closed_with for c in busy)


@pytest.mark.anyio
async def test_at_the_hard_limit_with_every_connection_busy_the_newcomer_gets_a_503() -> None:
    guard = ConnectionGuard(max_connections=4, header_timeout=60)
    for _ in range(guard.hard_limit):
        connection = FakeConnection()
        guard.opened(connection)
        guard.busy(connection)
    newcomer = FakeConnection()
    guard.opened(newcomer)
    assert newcomer.closed_with == FULL_REPLY and guard.open_connections == guard.hard_limit


@pytest.mark.anyio
async def test_over_the_cap_the_longest_waiting_are_closed_once_judged() -> None:
    guard = ConnectionGuard(max_connections=2, header_timeout=60)
    waiting = [FakeConnection(partial=True) for _ in range(4)]
    for connection in waiting:
        guard.opened(connection)
    with anyio.fail_after(30):  # two trims: a connection is judged once it was open at the previous one
        await waiting[1].closed.wait()
    assert waiting[0].closed.is_set() and not waiting[2].closed.is_set() and guard.open_connections == 2


@pytest.mark.anyio
async def test_headers_not_finished_in_time_get_a_408() -> None:
    guard = ConnectionGuard(max_connections=100, header_timeout=0.05)
    slow, silent, served = FakeConnection(partial=True), FakeConnection(), FakeConnection()
    for connection in (slow, silent, served):
        guard.opened(connection)
    guard.busy(served)
    with anyio.fail_after(30):
        await slow.closed.wait()
        await silent.closed.wait()
    assert slow.closed_with == TIMED_OUT_REPLY and silent.closed_with == b"" and served.closed_with is None


def test_the_cap_is_fitted_to_the_open_file_limit(data_dir: Path) -> None:
    code = (
        "import logging, resource, sys\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))\n"
        "from ltms.server.connections import connection_limit\n"
        "print(connection_limit(64), connection_limit(500))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env(data_dir)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["64", str(400 - 64 - 3 * ACCEPT_BACKLOG)]
    assert "the open-file limit (400) allows" in result.stderr and "ulimit -n" in result.stderr
