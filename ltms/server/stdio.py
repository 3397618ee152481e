"""MCP over stdin/stdout, with a stdin reader that never holds up shutdown.

The SDK's own reader blocks in a worker thread that cannot be cancelled, so a signal leaves the process hanging
until stdin closes. Here a daemon thread reads fd 0 with plain `os.read` (no buffered-reader lock to trip over at
interpreter exit) and hands complete lines to the event loop; cancelling the serving task simply abandons it.
stdin EOF ends the serving task normally: that is how desktop clients stop a stdio server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import ObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024


async def stdin_lines(fd: int = 0, max_line_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE) -> AsyncIterator[str]:
    """Lines from `fd`, decoded as UTF-8, until EOF. A line that is not valid UTF-8 is dropped with a warning, as
    HTTP refuses such a body: replacing the bad bytes (as the SDK's own reader does) would store altered text."""
    send, receive = anyio.create_memory_object_stream[bytes](16)
    token = anyio.lowlevel.current_token()
    private_fd = os.dup(fd)  # ours alone: closing sys.stdin at exit cannot pull it from under the thread
    threading.Thread(
        target=_pump, args=(private_fd, send, token, max_line_bytes), name="ltmc-stdin", daemon=True
    ).start()
    async with receive:
        async for line in receive:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                log.warning("dropping a stdin message that is not valid UTF-8 (bad byte at offset %d)", exc.start)
                continue
            yield text


def _pump(fd: int, send: ObjectSendStream[bytes], token: object, max_line_bytes: int) -> None:
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
                    log.warning("dropping a stdin message longer than %d bytes", max_line_bytes)
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
            anyio.from_thread.run_sync(send.close, token=token)


async def serve_stdio(mcp: MCPServer, max_line_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE) -> None:
    """Serve one MCP session over stdin/stdout; returns when stdin reaches EOF. Longer messages are dropped."""
    lines = stdin_lines(max_line_bytes=max_line_bytes)
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        # MCPServer.run_stdio_async() would use the SDK's uncancellable reader; its low-level server is the
        # same one every transport drives.
        lowlevel = mcp._lowlevel_server
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
