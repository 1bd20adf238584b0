"""The grid's progress display: runs done / running / failed / skipped and an ETA.

On a terminal one status line is redrawn in place and each finished run prints a line above it; in a log
(not a TTY) only the per-run lines are printed, each carrying the counts, so the log reads top to bottom.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Optional, TextIO


def format_seconds(seconds: Optional[float]) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class GridProgress:
    """Counts and timing of one ``fedloom bench`` invocation."""

    total: int
    workers: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    durations: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    def eta(self) -> Optional[float]:
        """Mean duration of the runs finished so far × the waves of runs still to go."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return mean * self.remaining / max(1, min(self.workers, self.remaining or 1))

    def status(self) -> str:
        finished = self.skipped + self.done
        return (f"[{finished}/{self.total} done ({self.skipped} skipped), {self.running} running, "
                f"{self.failed} failed, elapsed {format_seconds(time.monotonic() - self.started)}, "
                f"ETA {format_seconds(self.eta()) if self.remaining else '0s'}]")

    def _tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def redraw(self) -> None:
        """Refresh the status line (terminals only)."""
        if self._tty():
            self.stream.write("\r\033[K" + self.status())
            self.stream.flush()

    def event(self, text: str) -> None:
        """A line about one run, printed above the status line."""
        prefix = "\r\033[K" if self._tty() else ""
        self.stream.write(f"{prefix}{self.status()} {text}\n")
        self.redraw()

    def close(self) -> None:
        if self._tty():
            self.stream.write("\n")
        self.stream.flush()
