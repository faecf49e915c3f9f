"""All of sqsmaster's signal code: one small SIGALRM ticker. Nothing else calls ``signal.*``.

Timing uses ``signal.setitimer`` (float seconds, not ``signal.alarm``'s whole
seconds). The previous SIGALRM handler, and any outer timer, are restored on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any, Callable

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Shortest delay the ticker arms; setitimer(0) would mean "off".
MIN_TICK = 0.001


class Alarm:
    """Call ``on_tick()`` on SIGALRM; it returns the delay to the next tick, or None to stop.

    An exception raised by ``on_tick`` propagates into the code the signal
    interrupted: that is how a hard timeout stops a task. Use as a context manager
    in the main thread; ``__exit__`` always cancels the timer and restores the
    previous handler.
    """

    def __init__(self, on_tick: Callable[[], float | None]) -> None:
        self._on_tick = on_tick
        self._active = False
        self._previous_handler: Any = None
        self._outer_timer: tuple[float, float] = (0.0, 0.0)
        self._entered_at = 0.0

    def __enter__(self) -> "Alarm":
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(
                "signal isolation needs the main thread (SIGALRM is delivered there only); "
                "run the handler in the main thread or use isolation='process'"
            )
        self._outer_timer = signal.setitimer(signal.ITIMER_REAL, 0)
        if self._outer_timer[0]:
            logger.warning("an outer SIGALRM timer (%.3fs left) is suspended while a task runs",
                           self._outer_timer[0])
        self._entered_at = time.monotonic()
        self._previous_handler = signal.signal(signal.SIGALRM, self._handle)
        self._active = True
        return self

    def arm(self, delay: float) -> None:
        """Tick once after ``delay`` seconds (replacing any pending tick)."""
        if self._active:
            signal.setitimer(signal.ITIMER_REAL, max(delay, MIN_TICK))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:
            return
        delay = self._on_tick()
        if delay is not None and self._active:
            signal.setitimer(signal.ITIMER_REAL, max(delay, MIN_TICK))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous_handler)
        if self._outer_timer[0]:
            left = self._outer_timer[0] - (time.monotonic() - self._entered_at)
            signal.setitimer(signal.ITIMER_REAL, max(left, MIN_TICK), self._outer_timer[1])
