"""A one-line progress bar on stderr, drawn only when stderr is a terminal (quiet in pipes and logs).

While drawn it is the terminal's status line (ltms.logs): a log line clears it and redraws it below, and closing
it ends the line without drawing the same state a second time.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from ltms.logs import screen_lock, show_status

_BAR_WIDTH = 24


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """`bar(done, total)` matches the service's progress callback; `with ProgressBar(...)` ends the line."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream) if enabled is None else enabled
        self.min_interval = min_interval
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._drawn = False
        self._drawn_done = -1  # the count the line on screen shows

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or (self.total is not None and done >= self.total):
            self._last_draw = now
            self._draw(now)

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def render(self, now: float | None = None) -> str:
        elapsed = max((time.monotonic() if now is None else now) - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            remaining = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
            eta = f" eta {remaining:.0f}s" if remaining >= 1 else ""
            text = f"{self.label} [{bar}] {fraction * 100:3.0f}% {self.done}/{self.total} {rate:.0f}/s{eta}"
        else:
            text = f"{self.label} {self.done} {rate:.0f}/s"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return text[:width]

    def _draw(self, now: float) -> None:
        with screen_lock():
            self.stream.write("\r" + self.render(now) + "\x1b[K")
            self.stream.flush()
            if not self._drawn:
                show_status(self)
            self._drawn = True
            self._drawn_done = self.done

    def clear(self) -> None:
        """Blank the line (a log line is about to be written)."""
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def redraw(self) -> None:
        self._draw(time.monotonic())

    def close(self) -> None:
        """End the line, first drawing the final state if the screen does not show it yet (only if anything was
        drawn)."""
        with screen_lock():
            if self.enabled and self._drawn:
                if self._drawn_done != self.done:
                    self._draw(time.monotonic())
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = False
                show_status(None)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
