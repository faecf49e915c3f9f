"""The deadline of signal isolation: SIGALRM, scoped to one ``run()`` (like rq's death penalty).

The task runs in the main thread; ``signal.setitimer`` ticks there. A tick at
the deadline (or once the heartbeat thread fired an interrupt: a stuck task, a
lost lease with ``on_lease_lost="stop"``) raises the interrupt into the task, and
raises it again every second until ``run()`` returns. Any other tick only wakes
the heartbeat thread: the handler never does I/O.

Scope: the handler is installed when ``run()`` starts and everything is undone
before ``run()`` returns, so no tick can land in ``__exit__`` or after the
``with`` block. :meth:`Deadline.arm` must be called inside the ``try`` whose
``finally`` sets :attr:`Deadline.closing` (see
:meth:`sqsmaster.supervise.supervisor.SignalSupervisor.run`): a tick landing in
that ``finally`` then finds the flag set and does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any, Callable

from ..errors import ConfigurationError
from .policy import MIN_TICK, HeartbeatPolicy

logger = logging.getLogger(__name__)


def require_main_thread() -> None:
    """Raise ConfigurationError unless called in the main thread (SIGALRM is delivered there only)."""
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError(
            "signal isolation needs the main thread (SIGALRM is delivered there only); "
            "run the handler in the main thread or use isolation='process'")


class Deadline:
    """SIGALRM ticks for one ``run()``: ``with Deadline(policy, wake) as deadline: ...``.

    ``__enter__`` suspends any outer ITIMER_REAL timer and installs the handler
    (nothing ticks until :meth:`arm`); ``__exit__`` cancels the timer, restores the
    previous handler and resumes the outer timer with what it had left.
    :meth:`request` (any thread) makes the main thread take a tick now.
    """

    def __init__(self, policy: HeartbeatPolicy, wake: Callable[[], None]) -> None:
        self.policy = policy
        self._wake = wake
        #: Set first thing in run()'s ``finally``: from then on a tick does nothing at all.
        self.closing = False
        self._armed = False
        self._lock = threading.Lock()
        self._previous: Any = None
        self._outer: tuple[float, float] = (0.0, 0.0)
        self._entered_at = 0.0

    def __enter__(self) -> "Deadline":
        require_main_thread()
        self._outer = signal.setitimer(signal.ITIMER_REAL, 0)
        self._entered_at = time.monotonic()
        if self._outer[0]:
            logger.warning("an outer SIGALRM timer (%.3fs left) is suspended while a task runs", self._outer[0])
        self._previous = signal.signal(signal.SIGALRM, self._handle)
        return self

    def arm(self) -> None:
        """Start ticking: the first tick at the next heartbeat or the deadline, whichever comes first."""
        with self._lock:
            self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.policy.next_tick())

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.closing or not self._armed:
            return
        interrupt = self.policy.due_interrupt()
        # Set the next tick before raising: a fired interrupt is raised again a second later.
        signal.setitimer(signal.ITIMER_REAL, self.policy.next_tick())
        if interrupt is not None:
            raise interrupt
        self._wake()

    def request(self) -> None:
        """From the heartbeat thread: tick now in the main thread (a no-op once run() is over)."""
        with self._lock:
            if self._armed and not self.closing:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.closing = True
        with self._lock:  # after this, request() sends nothing
            self._armed = False
        # setitimer is a system call: a SIGALRM still pending for this thread is delivered on its
        # return, while our handler (which now does nothing) is still the one installed.
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if self._outer[0]:
            left = self._outer[0] - (time.monotonic() - self._entered_at)
            signal.setitimer(signal.ITIMER_REAL, max(left, MIN_TICK), self._outer[1])
