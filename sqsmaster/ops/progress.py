"""A progress bar: tqdm's when it is installed (``pip install 'sqsmaster[progress]'``), else a plain line.

tqdm is optional and imported only when a bar is made. The plain fallback prints
one line each time the count changes, which reads well in a terminal and in a log.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LineProgress:
    """``done/total`` as one line per change, with the elapsed time; no dependency."""

    def __init__(self, total: int, description: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._started = time.monotonic()

    def update_to(self, done: int) -> None:
        """Show ``done`` items finished, if that is news."""
        if done == self.done:
            return
        self.done = done
        width = 20
        filled = int(width * done / self.total) if self.total else width
        print(f"{self.description} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
              f"({time.monotonic() - self._started:.1f}s)", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TqdmProgress:
    """The same interface over a ``tqdm`` bar."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update_to(self, done: int) -> None:
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(total: int, description: str, stream: TextIO | None = None) -> LineProgress | TqdmProgress:
    """A bar to ``update_to(done)`` and ``close()``: tqdm's when it is installed, else :class:`LineProgress`."""
    try:
        from tqdm import tqdm
    except ImportError:
        return LineProgress(total, description, stream)
    return TqdmProgress(tqdm(total=total, desc=description, unit="task", file=stream if stream else sys.stderr,
                             leave=True))
