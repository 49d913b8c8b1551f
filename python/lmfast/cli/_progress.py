"""A one-line progress display for long work in the command line (model loads), on stderr.

Shown only on a terminal and only once the work has taken longer than `after` seconds, so a
quick load prints nothing and a piped run never gets control characters."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class LoadBar:
    """Call it with progress values 0.0 .. 1.0 (``on_load_progress``); ``close()`` clears the line."""

    def __init__(self, label: str, *, after: float = 1.0, stream: TextIO | None = None, enabled: bool | None = None):
        self._label = label
        self._after = after
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._shown = False

    def __call__(self, progress: float) -> None:
        if not self._enabled or time.monotonic() - self._start < self._after:
            return
        width = 30
        done = int(round(progress * width))
        self._stream.write(f"\r{self._label} [{'#' * done}{'.' * (width - done)}] {progress * 100:3.0f}%")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
