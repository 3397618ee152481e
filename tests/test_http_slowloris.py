"""Slowloris (issue 9.7): a connection gets a bounded time for its request headers, the server caps its connections
without locking out a client that sends its request at once, and what it closes is logged as a count, not a line
each. A real `ltmc serve` process; bench/reliability/slowloris.py run small."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from bench.reliability.reliability_kit import run_script
from tests.helpers import REPO, ServerProcess, child_env

StartServer = Callable[..., ServerProcess]


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_headers_that_never_end_get_a_408_and_the_connection_closed(start_server: StartServer, data_dir: Path) -> None:
    server = start_server("http", env=child_env(data_dir, LTMC_HTTP_HEADER_TIMEOUT="1"))
    assert server.port is not None
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as silent,
    ):
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ...and never the blank line
        reply = read_until_closed(slow)  # the server closes it (a socket timeout here fails the test)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert read_until_closed(silent) == b""  # sent nothing: closed without a word
    server.wait_healthy()  # and the server still answers


def test_the_slowloris_trial_small(tmp_path: Path) -> None:
    """bench/reliability/slowloris.py: 500 connections against a server allowed 400 open files (so without the
    guard they would take every one) and 64 connections: a normal client is answered throughout."""
    out = tmp_path / "slowloris.json"
    limits = ["--fd-limit", "400", "--max-connections", "64", "--header-timeout", "2", "--timeout", "15"]
    script = [sys.executable, str(REPO / "bench" / "reliability" / "slowloris.py"), "--connections", "500", *limits]
    result = run_script([*script, "--seconds", "6", "--baseline", "1", "--json", str(out)], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0 and figures["answered_during"] > 0, figures["error_samples"]
    assert figures["closed_by_server"] > 0  # the attack's connections were closed, not held
    assert figures["log_lines"] < 50  # counts, not a line per connection
    assert figures["healthy_after"] and figures["shutdown_status"] == 0 and figures["tracebacks"] == 0
    assert "| attack connections opened |" in result.stdout
