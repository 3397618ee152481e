"""Over stdio every request gets an answer (issue 9.9): a line the SDK would drop without a word (a lone surrogate,
an integer over 4,300 digits, JSON nested deeper than ~200 levels, invalid UTF-8, an oversized line, not JSON-RPC)
is answered with a JSON-RPC error carrying the request's id, logged in one line without its content, and the
server keeps serving. Requests read before stdin closes are answered before the server exits.

A real `ltmc serve --transport stdio` process, raw JSON-RPC lines on its stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ltms.server.stdio import Oversized, check_line
from tests.helpers import child_env

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
SECRET = "zebra-kumquat-7731"  # memory text in a refused line: it must not reach the log


def call(request_id: int, tool: str, arguments_json: str) -> bytes:
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{tool}","arguments":'
    return (head + arguments_json + "}}").encode()


def serve_stdio(data_dir: Path, lines: list[bytes]) -> tuple[dict[Any, dict[str, Any]], list[dict[str, Any]], str]:
    """Write `lines` (after the handshake) and close stdin; the answers by id, the id-less ones, and the log."""
    payload = b"\n".join([json.dumps(INITIALIZE).encode(), json.dumps(INITIALIZED).encode(), *lines]) + b"\n"
    proc = subprocess.run(
        [sys.executable, "-m", "ltms", "serve", "--transport", "stdio"],
        input=payload,
        capture_output=True,
        timeout=120,
        env=child_env(data_dir),
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    by_id = {answer["id"]: answer for answer in answers if answer.get("id") is not None}
    assert len(by_id) == len([a for a in answers if a.get("id") is not None]), "an id was answered twice"
    return by_id, [a for a in answers if a.get("id") is None], stderr


def test_bad_lines_are_answered_and_the_server_carries_on(data_dir: Path) -> None:
    lines = [
        call(1, "store_memory", f'{{"text":"{SECRET} \\ud800"}}'),  # a lone high surrogate
        call(2, "retrieve_memory", f'{{"query":"\\udc00 {SECRET}"}}'),  # a lone low surrogate
        call(3, "retrieve_memory", '{"query":"x","k":' + "7" * 4301 + "}"),  # over Python's 4,300 digits
        call(4, "store_memory", f'{{"text":"{SECRET}","metadata":' + '{"a":' * 300 + "1" + "}" * 300 + "}"),
        b'{"jsonrpc":"2.0","id":5,"method":"ping","params":{"pad":"' + SECRET.encode() + b'\xff\xfe"}}',  # not UTF-8
        b'{"jsonrpc":"2.0","id":6,"method":"ping","params":{"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}}',  # too long
        b'{"jsonrpc":"2.0","id":7,"method":42}',  # JSON, not JSON-RPC
        b"this is not json " + SECRET.encode(),
        b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"x":"\\ud800"}}',  # a notification: no answer
        b'{"jsonrpc":"2.0","id":8,"method":"ping"}',
        call(9, "store_memory", '{"text":"still serving after all that"}'),
    ]
    answers, idless, log = serve_stdio(data_dir, lines)

    def error(request_id: int) -> dict[str, Any]:
        assert request_id in answers, f"no answer for request {request_id}: {sorted(answers, key=str)}"
        return answers[request_id]["error"]

    for request_id in (1, 2):
        assert error(request_id)["code"] == -32700 and "lone surrogate" in error(request_id)["message"]
    assert error(3)["code"] == -32700 and "number too long" in error(3)["message"]
    assert error(4)["code"] == -32700 and "nested too deeply" in error(4)["message"]
    assert error(5)["code"] == -32700 and "not valid UTF-8" in error(5)["message"]
    assert error(6)["code"] == -32600 and "longer than" in error(6)["message"]
    assert error(7)["code"] == -32600 and "not a JSON-RPC message" in error(7)["message"]
    assert [a["error"]["code"] for a in idless] == [-32700]  # the line that was not JSON: no id to answer
    assert answers[8]["result"] == {}
    assert answers[9]["result"]["structuredContent"]["created"] is True

    refusals = [line for line in log.splitlines() if "stdin message" in line]
    assert len(refusals) == 9  # one line each, the notification included
    assert SECRET not in log and "\\ud800" in log  # what was wrong, never the text itself


def test_requests_read_before_stdin_closes_are_all_answered(data_dir: Path) -> None:
    lines = [call(n, "store_memory", json.dumps({"text": f"note {n} before the end of input"})) for n in range(20)]
    answers, _, _ = serve_stdio(data_dir, [*lines, b'{"jsonrpc":"2.0","id":"last","method":"ping"}'])
    assert sorted(n for n in answers if isinstance(n, int)) == list(range(20))
    assert all("result" in answers[n] for n in range(20)) and answers["last"]["result"] == {}


@pytest.mark.parametrize(
    ("line", "request_id", "code", "answered"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', 1, None, True),
        (b'{"jsonrpc":"2.0","id":"a","method":"x","params":{"t":"\\ud800"}}', "a", -32700, True),
        (b'{"jsonrpc":"2.0","method":"x","params":{"t":"\\ud800"}}', None, -32700, False),  # a notification
        (b'{"jsonrpc":"2.0","id":3,"result":{"t":"\\ud800"}}', 3, -32700, False),  # a response to us
        (b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', None, -32700, True),  # an id we cannot echo
        (b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}', None, -32700, True),  # nor this one
        (b'{"jsonrpc":"2.0","id":4,"method":"x","params":' + b"[" * 2000 + b"]" * 2000 + b"}", 4, -32700, True),
        (Oversized(b'{"jsonrpc": "2.0", "id": 12, "method": "ping", "params": {"pad": "xx', 100), 12, -32600, True),
        (Oversized(b'{"params": {"pad": "xx', 100), None, -32600, True),
    ],
)
def test_check_line(line: bytes | Oversized, request_id: Any, code: int | None, answered: bool) -> None:
    verdict = check_line(line)
    assert verdict.request_id == request_id
    if code is None:
        assert not hasattr(verdict, "error")
    else:
        assert verdict.error.code == code and verdict.answer is answered  # type: ignore[union-attr]
