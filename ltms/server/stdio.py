"""MCP over stdin/stdout: a stdin reader that never holds up shutdown, and an answer for every request.

The SDK's own reader blocks in a worker thread that cannot be cancelled, so a signal leaves the process hanging
until stdin closes. Here a daemon thread reads fd 0 with plain `os.read` (no buffered-reader lock to trip over at
interpreter exit) and hands complete lines to the event loop; cancelling the serving task simply abandons it.

The SDK drops a line it cannot parse without a word, so a client waits forever for the answer. Every line is
checked here first, as the SDK will parse it: one that is not valid UTF-8, not JSON the SDK accepts (a lone
surrogate, a number over 4,300 digits, nesting deeper than ~200 levels), not a JSON-RPC message, or too long,
is answered with a JSON-RPC error (carrying the request's id when one can be made out) and logged in one line.

stdin EOF ends the session: that is how desktop clients stop a stdio server. Requests read before it are
answered first (for up to `EOF_GRACE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.lowlevel import EventLoopToken
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared._stream_protocols import WriteStream
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from ltms.server.sdk_compat import run_lowlevel

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
EOF_GRACE_SECONDS = 30.0
_PREFIX_BYTES = 4096  # of an oversized line, kept to find its id
RequestId = int | str


@dataclass(frozen=True)
class Oversized:
    """A line longer than the limit: only its beginning is kept."""

    prefix: bytes
    limit: int


# -- reading fd 0 ---------------------------------------------------------------------------------------------------


async def stdin_messages(
    fd: int = 0, max_line_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE
) -> AsyncIterator[bytes | Oversized]:
    """Non-blank lines from `fd` (without the newline) until EOF; a longer line than `max_line_bytes` is skipped
    and reported as `Oversized`."""
    send, receive = anyio.create_memory_object_stream[bytes | Oversized](16)
    token = anyio.lowlevel.current_token()
    private_fd = os.dup(fd)  # ours alone: closing sys.stdin at exit cannot pull it from under the thread
    threading.Thread(
        target=_pump, args=(private_fd, send, token, max_line_bytes), name="ltmc-stdin", daemon=True
    ).start()
    async with receive:
        async for item in receive:
            yield item


def _pump(fd: int, send: ObjectSendStream[bytes | Oversized], token: EventLoopToken, max_line_bytes: int) -> None:
    pending = bytearray()
    discarding = False  # inside an oversized line: drop bytes up to its newline
    try:
        while chunk := os.read(fd, READ_CHUNK):
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                if discarding:
                    discarding = False
                elif line.strip():
                    anyio.from_thread.run(send.send, line, token=token)
            if len(pending) > max_line_bytes:
                if not discarding:
                    anyio.from_thread.run(
                        send.send, Oversized(bytes(pending[:_PREFIX_BYTES]), max_line_bytes), token=token
                    )
                discarding = True
                pending.clear()
        if pending.strip() and not discarding:
            anyio.from_thread.run(send.send, bytes(pending), token=token)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
        return  # the server stopped listening, or the event loop is gone
    except OSError as exc:
        log.error("cannot read stdin: %s", exc)
    finally:
        os.close(fd)
        with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop has already finished
            anyio.from_thread.run_sync(send.close, token=token)  # type: ignore[attr-defined]  # a memory stream


# -- checking a line --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    text: str
    request_id: RequestId | None  # set for a request (which expects an answer)
    cancels: RequestId | None = None  # set for notifications/cancelled: that request may never be answered


@dataclass(frozen=True)
class Refused:
    error: ErrorData
    request_id: RequestId | None
    answer: bool  # False for a notification or a response: JSON-RPC answers neither


_ID_AT_START = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,200}")')
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def check_line(line: bytes | Oversized) -> Accepted | Refused:
    """Decide what the SDK would make of `line`: accept it, or say why not (and to which request id)."""
    if isinstance(line, Oversized):
        return _refused(
            line.prefix.decode("utf-8", "replace"),
            ErrorData(code=INVALID_REQUEST, message=f"Invalid Request: message longer than {line.limit} bytes"),
            _id_at_start(line.prefix),
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"Parse error: not valid UTF-8 (bad byte at offset {exc.start})"
        return _refused(line.decode("utf-8", "replace"), ErrorData(code=PARSE_ERROR, message=reason))
    try:
        message = jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        return _refused(text, _describe(exc, text))
    if isinstance(message, JSONRPCRequest):
        return Accepted(text, message.id)
    if isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
        cancelled = (message.params or {}).get("requestId")
        return Accepted(text, None, cancelled if isinstance(cancelled, int | str) else None)
    return Accepted(text, None)


def _describe(exc: ValidationError, text: str) -> ErrorData:
    """One line, never the input itself (it may be a memory's text)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] != "json_invalid":
        where = ".".join(str(part) for part in first["loc"][1:]) or "message"
        return ErrorData(
            code=INVALID_REQUEST, message=f"Invalid Request: not a JSON-RPC message ({where}: {first['msg']})"
        )
    detail = str(first.get("ctx", {}).get("error", first["msg"])).removeprefix("Invalid JSON: ")
    if "escape" in detail and (surrogate := _LONE_SURROGATE.search(text)) is not None:
        detail = f"a string holds a lone surrogate {surrogate.group(0)[:6]}, which is not valid Unicode ({detail})"
    elif "recursion limit" in detail:
        detail = f"JSON nested too deeply ({detail})"
    elif "number out of range" in detail:
        detail = f"a number too long to read ({detail})"
    return ErrorData(code=PARSE_ERROR, message=f"Parse error: {detail}")


def _refused(text: str, error: ErrorData, request_id: RequestId | None = None) -> Refused:
    """Who sent it: a request (answer it, with its id when one can be made out), or a notification or
    response (JSON-RPC answers neither)."""
    envelope = _lenient_envelope(text)
    if envelope is None:
        return Refused(error, request_id if request_id is not None else _id_at_start(text.encode()), answer=True)
    found = envelope.get("id")
    if isinstance(found, bool) or not isinstance(found, int | str) or not _encodable(found):
        found = None
    is_request = "method" in envelope and "id" in envelope
    is_other = "id" not in envelope or "result" in envelope or "error" in envelope
    return Refused(error, found, answer=is_request or not is_other)


def _lenient_envelope(text: str) -> dict[str, Any] | None:
    # Python's json takes what the SDK refuses (lone surrogates, nesting up to ~1000); huge numbers become None.
    try:
        value = json.loads(text, parse_int=lambda digits: int(digits) if len(digits) <= 18 else None)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _id_at_start(raw: bytes) -> RequestId | None:
    match = _ID_AT_START.match(raw)
    if match is None:
        return None
    with contextlib.suppress(ValueError):
        found = json.loads(match.group(1))
        if isinstance(found, int | str) and _encodable(found):
            return found
    return None


def _encodable(value: int | str) -> bool:
    if isinstance(value, int):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- serving --------------------------------------------------------------------------------------------------------


class _Answers:
    """What was read from stdin and still awaits its answer (a request id, or a refusal's token), so that EOF can
    wait for the answers."""

    def __init__(self) -> None:
        self._open: set[object] = set()
        self._changed = anyio.Event()

    def opened(self, key: object) -> None:
        self._open.add(key)

    def answered(self, key: object) -> None:
        self._open.discard(key)
        self._changed.set()
        self._changed = anyio.Event()

    async def all_answered(self) -> None:
        while self._open:
            await self._changed.wait()


class _WatchedWrites:
    """The write stream, noting each answer as it goes out."""

    def __init__(self, inner: WriteStream[SessionMessage], answers: _Answers) -> None:
        self._inner = inner
        self._answers = answers

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        if isinstance(item.message, JSONRPCResponse | JSONRPCError) and item.message.id is not None:
            self._answers.answered(item.message.id)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedWrites:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


async def serve_stdio(mcp: MCPServer, max_line_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE) -> None:
    """Serve one MCP session over stdin/stdout; returns when stdin reaches EOF and what was read is answered."""
    answers = _Answers()
    refusals_in, refusals_out = anyio.create_memory_object_stream[tuple[object, SessionMessage]](64)

    async def checked_lines() -> AsyncIterator[str]:
        async with refusals_in:
            async for line in stdin_messages(max_line_bytes=max_line_bytes):
                verdict = check_line(line)
                if isinstance(verdict, Accepted):
                    if verdict.request_id is not None:
                        answers.opened(verdict.request_id)
                    if verdict.cancels is not None:
                        answers.answered(verdict.cancels)  # a cancelled request may get no answer
                    yield verdict.text
                    continue
                _log_refusal(verdict, line)
                if verdict.answer:
                    token = object()
                    answers.opened(token)
                    reply = JSONRPCError(jsonrpc="2.0", id=verdict.request_id, error=verdict.error)
                    await refusals_in.send((token, SessionMessage(reply)))
        with anyio.move_on_after(EOF_GRACE_SECONDS):  # stdin is closed: finish what was asked
            await answers.all_answered()

    async with stdio_server(stdin=checked_lines()) as (read_stream, write_stream):  # type: ignore[arg-type]
        writes = _WatchedWrites(write_stream, answers)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_send_refusals, refusals_out, writes, answers)
            await run_lowlevel(mcp, read_stream, writes)
            tg.cancel_scope.cancel()


async def _send_refusals(
    refusals: ObjectReceiveStream[tuple[object, SessionMessage]], writes: _WatchedWrites, answers: _Answers
) -> None:
    async with refusals:
        async for token, reply in refusals:
            try:
                await writes.send(reply)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the session is over
            finally:
                answers.answered(token)


def _log_refusal(verdict: Refused, line: bytes | Oversized) -> None:
    size = len(line) if isinstance(line, bytes) else f"more than {line.limit}"
    if isinstance(line, Oversized):
        log.warning("dropping a stdin message longer than %d bytes (id %s)", line.limit, verdict.request_id)
        return
    log.warning(
        "refused a stdin message of %s bytes (id %s, %s): %s",
        size,
        verdict.request_id,
        "answered" if verdict.answer else "not a request, not answered",
        verdict.error.message,
    )
