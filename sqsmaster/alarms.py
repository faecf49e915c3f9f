"""The worker's signal code: graceful shutdown on SIGTERM/SIGINT (:class:`ShutdownSignals`).

The supervisor's signal code lives in :mod:`sqsmaster.supervise`: the SIGALRM
deadline of signal isolation (:mod:`sqsmaster.supervise.deadline`) and the
process-group signalling of process isolation (:mod:`sqsmaster.supervise.child`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from .errors import ConfigurationError

logger = logging.getLogger(__name__)


# -- the worker: graceful shutdown on SIGTERM/SIGINT ---------------------------------------------

class WorkerShutdown(BaseException):
    """Raised inside a running task when the worker must stop it now (a second signal, or the grace ran out).

    Not a :class:`~sqsmaster.errors.HandlerInterrupt`: ``MessageHandler`` treats it
    like KeyboardInterrupt, releasing the message with visibility 0 and re-raising.
    """


class ShutdownSignals:
    """The worker's SIGTERM/SIGINT handling: the first signal asks to stop, a second one stops now.

    ``stopping`` turns true at the first signal; the loop checks it between
    receives and tasks. While ``interruptible`` is true (a task is running), a
    second signal, or the end of ``grace`` seconds after the first, raises
    :class:`WorkerShutdown` in the task. ``ignore`` lists signals to disregard
    (a pool's children leave SIGINT/SIGTERM to their parent); they get a handler
    that does nothing rather than SIG_IGN, which a task's own child processes
    would inherit, even across exec, and then could not be stopped with SIGTERM. A context manager
    for the main thread; ``__exit__`` restores every previous handler.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), grace: float | None = None,
                 ignore: tuple[int, ...] = ()) -> None:
        self.signals = signals
        self.grace = grace
        self.ignore = ignore
        self.received = 0
        self.interruptible = False
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._forced = False

    @property
    def stopping(self) -> bool:
        return self.received > 0

    @property
    def forced(self) -> bool:
        """True after a second signal or once the grace ran out: release everything now."""
        return self._forced

    def __enter__(self) -> "ShutdownSignals":
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError("the worker handles SIGTERM/SIGINT and must run in the main thread")
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        for signum in self.ignore:
            self._previous[signum] = signal.signal(signum, _disregard)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:
            logger.warning("%s received: stopping (no new message; a running task has %s to finish; "
                           "send it again to release everything now)", signal.Signals(signum).name,
                           "unlimited time" if self.grace is None else f"{self.grace}s")
            if self.grace is not None:
                self._timer = threading.Timer(self.grace, self._grace_over, (signum,))
                self._timer.daemon = True
                self._timer.start()
            return
        self._forced = True
        if self.interruptible:
            self.interruptible = False
            raise WorkerShutdown(f"stopped by {signal.Signals(signum).name}")

    def _grace_over(self, signum: int) -> None:
        # Runs in the timer thread: let the main thread's handler do the raising.
        logger.warning("the %ss grace period is over", self.grace)
        signal.pthread_kill(threading.main_thread().ident or 0, signum)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def _disregard(signum: int, frame: FrameType | None) -> None:
    logger.debug("%s disregarded: the pool's parent decides when this worker stops", signal.Signals(signum).name)


def send_shutdown(pid: int, signum: int = signal.SIGUSR1) -> None:
    """Ask a pool child to stop (its :class:`ShutdownSignals` listens to ``signum``); a no-op if it is gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
