"""A one-line progress bar with rate and ETA, written to stderr (no dependency beyond the stdlib).

Usage:
    with ProgressBar(total=5000, unit="samples", label="extract") as bar:
        bar.advance(64)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Redraws at most every `interval` seconds; on a non-terminal stream, prints plain lines instead."""

    def __init__(self, total: int, unit: str, label: str, stream: TextIO | None = None,
                 interval: float = 0.2, enabled: bool = True, width: int = 30):
        self.total, self.unit, self.label = total, unit, label
        self.stream = stream or sys.stderr
        self.enabled, self.width = enabled, width
        self.interval = interval if self.stream.isatty() else max(interval, 5.0)
        self.done = 0
        self.start = self.last_draw = time.monotonic()

    def __enter__(self) -> ProgressBar:
        self.start = self.last_draw = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.draw(final=True)

    def advance(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.last_draw >= self.interval:
            self.draw()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        return (f"{self.label} [{bar}] {self.done}/{self.total} {self.unit} "
                f"{rate:.1f} {self.unit}/s elapsed {format_seconds(elapsed)} ETA {format_seconds(eta)}")

    def draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        self.last_draw = time.monotonic()
        if self.stream.isatty():
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
