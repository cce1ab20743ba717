"""A dependency-free progress bar on stderr (the GPU box has no tqdm)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Call with ``(done, total)``; redraws at most every ``interval`` seconds.

    Attacks call it with a Python int each step, so it never forces a device sync.
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, interval: float = 0.2,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self._start = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        width = 24
        filled = width * done // max(total, 1)
        rate = done / max(now - self._start, 1e-9)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
            f" {rate:7.1f} it/s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def restart(self, label: str) -> None:
        self.label = label
        self._start = time.perf_counter()
        self._last = 0.0
