"""A progress bar for the CLI's long interactive work, on stderr so stdout stays parseable.

On a terminal the bar is redrawn in place (``\\r``); anywhere else (a log collector, a pipe, a
``kubectl exec`` without a TTY) each update is a plain line, throttled so a long restore does
not flood the log. No dependency: a rebuild prints one bar per partition, nothing fancier.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "render_bar"]

_WIDTH = 30


def render_bar(label: str, done: int, total: int, *, width: int = _WIDTH) -> str:
    """``label [#####.....]  50% 1,000/2,000``; an unknown or empty total shows the count only."""
    if total <= 0:
        return f"{label} {done:,}"
    fraction = min(max(done / total, 0.0), 1.0)
    filled = round(fraction * width)
    return f"{label} [{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {min(done, total):,}/{total:,}"


class Progress:
    """One bar: ``update(done)`` as work goes, ``finish(summary)`` once at the end."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._every_s = every_s
        self._clock = clock
        self._last_line = -every_s
        self._drawn = False

    def update(self, done: int) -> None:
        """Redraw (terminal) or print a line at most every ``every_s`` seconds (elsewhere)."""
        if self.tty:
            self.stream.write("\r" + render_bar(self.label, done, self.total))
            self._drawn = True
        else:
            now = self._clock()
            if now - self._last_line < self._every_s:
                return
            self._last_line = now
            self.stream.write(render_bar(self.label, done, self.total) + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        """End the bar with a final line (the bar's own line on a terminal)."""
        prefix = "\r\x1b[K" if self.tty and self._drawn else ""
        self.stream.write(f"{prefix}{self.label} {summary}\n")
        self.stream.flush()
