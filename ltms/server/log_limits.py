"""Rate-limited logging for what a remote client can trigger at will.

A flood of bad connections made uvicorn and asyncio log ~3,500 lines a second (70 MB a minute). This filter,
installed on the log handlers while HTTP is served, lets each kind of message (same logger, level and format
string) through `burst` times per `interval` seconds; the next one that gets through says how many were held
back. Numbers and long hex runs (ports, session ids) do not make a message a new kind. LTMC's own INFO and
DEBUG lines are never held back: they are not the client's to trigger.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_KINDS = 1000  # distinct kinds remembered; beyond that the oldest are forgotten
_VARYING = re.compile(r"[0-9a-fA-F]{8,}|\d+")


@dataclass
class _Window:
    started: float
    passed: int = 0
    held: int = 0


class RateLimitFilter(logging.Filter):
    def __init__(self, burst: int = 5, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_ltmc_rate_verdict", None)
        if verdict is None:  # one decision per record, however many handlers ask
            verdict = self._decide(record)
            record._ltmc_rate_verdict = verdict
        return bool(verdict)

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("ltms") and record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, _VARYING.sub("#", str(record.msg)))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.interval:
            held = window.held if window is not None else 0
            window = self._windows[key] = _Window(started=now)
            if len(self._windows) > MAX_KINDS:
                del self._windows[next(iter(self._windows))]
            if held:
                record.msg = f"{record.msg} [{held} more like this held back in the last {self.interval:g}s]"
        if window.passed >= self.burst:
            window.held += 1
            return False
        window.passed += 1
        return True


@contextlib.contextmanager
def rate_limited_logs(burst: int = 5, interval: float = 10.0) -> Iterator[RateLimitFilter]:
    """Rate-limit every handler of the root logger for the duration."""
    limiter = RateLimitFilter(burst, interval)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(limiter)
    try:
        yield limiter
    finally:
        for handler in handlers:
            handler.removeFilter(limiter)


class CountingReport:
    """Counts events of a few kinds and logs the counts at most once per `interval` seconds (when one happens)."""

    def __init__(
        self, logger: logging.Logger, message: str, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._message = message  # a format string with one %s: the counts
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._last: float | None = None

    def note(self, what: str) -> None:
        self._counts[what] = self._counts.get(what, 0) + 1
        now = self._clock()
        if self._last is None or now - self._last >= self._interval:
            self._last = now
            self._logger.warning(self._message, ", ".join(f"{n} {what}" for what, n in self._counts.items()))
            self._counts.clear()
