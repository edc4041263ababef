"""A tiny stderr progress bar (no dependency): the full run takes many minutes."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One bar per scenario; ``step(label)`` after each measured unit of work."""

    def __init__(self, title: str, total: int, *, stream: TextIO | None = None) -> None:
        self.title = title
        self.total = max(1, total)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._started = time.perf_counter()
        self._draw("")

    def step(self, label: str = "", n: int = 1) -> None:
        """Count ``n`` units as done and redraw with ``label`` naming the current one."""
        self.done = min(self.total, self.done + n)
        self._draw(label)

    def note(self, text: str) -> None:
        """Print a line (a skip reason, an error) without breaking the bar."""
        self._stream.write(f"\r\033[K{text}\n")
        self._draw("")

    def close(self) -> None:
        """Finish the bar's line."""
        self._draw("done")
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, label: str) -> None:
        width = 28
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self._started
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(
            f"\r\033[K{self.title:<12} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s {label}"[
                :120
            ]
        )
        self._stream.flush()
