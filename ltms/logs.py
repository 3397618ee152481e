"""Logging goes to stderr, always: in stdio mode stdout belongs to the protocol.

A progress bar on the terminal is a status line that a log line would run into; while one is shown, each log line
clears it first and redraws it after, so the two never share a line.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Protocol


class StatusLine(Protocol):
    def clear(self) -> None: ...
    def redraw(self) -> None: ...


_status: StatusLine | None = None
_screen = threading.RLock()  # held while a status line or a log line is written


def show_status(line: StatusLine | None) -> None:
    """Register the status line on stderr now (None: there is none)."""
    global _status
    with _screen:
        _status = line


def screen_lock() -> threading.RLock:
    return _screen


class _StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def emit(self, record: logging.LogRecord) -> None:
        with _screen:
            status = _status
            if status is not None:
                status.clear()
            super().emit(record)
            if status is not None:
                status.redraw()


def configure_logging(level: str = "INFO") -> None:
    handler = _StatusAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # faiss announces which SIMD build it loaded at INFO; that is noise for an operator.
    logging.getLogger("faiss").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
