"""The worker's signal code: graceful shutdown on SIGTERM/SIGINT (:class:`ShutdownSignals`).

The supervisor's signal code lives in :mod:`sqsmaster.supervise`: the SIGALRM
deadline of signal isolation (:mod:`sqsmaster.supervise.deadline`) and the
process-group signalling of process isolation (:mod:`sqsmaster.supervise.child`).
A pool's parent counts its signals with :class:`sqsmaster.worker.shutdown.CountedSignals`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any, Callable, Iterator

from ..errors import ConfigurationError, WorkerShutdown

logger = logging.getLogger(__name__)


# -- the worker: graceful shutdown on SIGTERM/SIGINT ---------------------------------------------

#: The signal a worker sends its own main thread to raise :class:`WorkerShutdown` in a running task
#: (a second stop signal, the end of the grace): thread-directed, so it always interrupts the main thread.
WAKE_SIGNAL = signal.SIGUSR2
#: How often the shutdown watcher thread looks at the stop count, the grace and the deadline (s).
WATCH_TICK = 0.05


def block_stop_signals() -> None:
    """In a helper thread: leave the stop and wake signals to the main thread, whose handlers act on them
    (a signal the kernel hands to another thread would not interrupt the main thread's blocking call)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, WAKE_SIGNAL})


class ShutdownSignals:
    """A worker process's stop signals: the first asks to stop, a second one (or the end of ``grace``) stops now.

    ``stopping`` turns true at the first signal; the loop checks it between receives
    and tasks. Inside :meth:`running_task`, a forced stop raises :class:`WorkerShutdown`
    in the task, once (raising it again could interrupt the handler's own clean-up, such
    as a task process being killed; a task that swallows it runs on to the deadline
    below). The signal handler only counts and raises; a watcher thread does the rest:
    it logs, calls ``on_stop()`` once
    (the worker releases its unstarted messages there), wakes the main thread when the
    stop becomes forced, and calls ``on_deadline()`` ``grace + margin`` seconds after the
    first signal (the worker logs what is left undone and exits: the clock bounds a shutdown,
    whatever the network does).

    ``stop_count`` (a pool's child): an int in shared memory (``.value``) the pool's parent
    raises once per SIGTERM/SIGINT it receives; the child's own ``signals`` only nudge it
    then, and ``cause`` (shared too) names the signal the parent received, for the log.
    ``ignore`` lists signals to disregard (a pool's children leave SIGINT/SIGTERM to their
    parent); they get a handler that does nothing rather than SIG_IGN, which a task's own
    child processes would inherit, even across exec, and then could not be stopped with
    SIGTERM. A context manager for the main thread; ``__exit__`` restores every handler.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), grace: float | None = None,
                 ignore: tuple[int, ...] = (), *, stop_count: Any = None, cause: Any = None,
                 margin: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.signals = signals
        self.grace = grace
        self.ignore = ignore
        self.margin = margin
        self.interruptible = False
        #: Called once, in the watcher thread, at the first stop signal.
        self.on_stop: Callable[[], None] | None = None
        #: Called once, in the watcher thread, ``grace + margin`` seconds after the first stop signal.
        self.on_deadline: Callable[[], None] | None = None
        self._stop_count = stop_count
        self._cause = cause
        self._clock = clock
        self._own_count = 0
        self._last_signal = 0
        self._grace_over = False
        self._previous: dict[int, Any] = {}
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def received(self) -> int:
        """How many stop signals this worker has been sent (through its pool's parent, for a pool child)."""
        return int(self._stop_count.value) if self._stop_count is not None else self._own_count

    @property
    def stopping(self) -> bool:
        return self.received > 0

    @property
    def forced(self) -> bool:
        """True after a second signal or once the grace ran out: release everything now."""
        return self.received >= 2 or self._grace_over

    def __enter__(self) -> "ShutdownSignals":
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError("the worker handles SIGTERM/SIGINT and must run in the main thread")
        for signum in (*self.signals, WAKE_SIGNAL):
            self._previous[signum] = signal.signal(signum, self._handle)
        for signum in self.ignore:
            self._previous[signum] = signal.signal(signum, _disregard)
        self._watcher = threading.Thread(target=self._watch, name="sqsmaster-shutdown", daemon=True)
        self._watcher.start()
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only count and raise: no I/O, no lock (the interrupted code may hold it).
        if self._stop_count is None and signum in self.signals:
            self._own_count += 1
            self._last_signal = signum
        if self.interruptible and self.forced:
            self.interruptible = False
            raise WorkerShutdown(self._why())

    def _why(self) -> str:
        return "the grace period is over" if self._grace_over and self.received < 2 else "a second stop signal"

    @contextlib.contextmanager
    def running_task(self) -> Iterator[None]:
        """Around a task's ``run()``: a forced stop raises WorkerShutdown inside it (at once if already forced)."""
        self.interruptible = True
        try:
            if self.forced:
                self.interruptible = False
                raise WorkerShutdown(self._why())
            yield
        finally:
            self.interruptible = False

    def cause(self) -> str:
        """What the operator did, in words: ``SIGTERM`` (or ``SIGTERM to the pool``), for the log."""
        if self._stop_count is not None:
            signum = int(self._cause.value) if self._cause is not None else 0
            return f"{_signal_name(signum)} to the pool" if signum else "the pool's own stop"
        return _signal_name(self._last_signal) if self._last_signal else "a stop signal"

    def _watch(self) -> None:
        block_stop_signals()
        seen, stopped_at, deadline_done = 0, 0.0, False
        while not self._closed.wait(WATCH_TICK):
            received, now = self.received, self._clock()
            if received > seen:
                self._log_stops(received, seen)
                if seen == 0:
                    stopped_at = now
                    self._first_stop()
                seen = received
            if not seen:
                continue
            if self.grace is not None and not self._grace_over and now >= stopped_at + self.grace:
                self._grace_over = True
                if self.interruptible:
                    logger.warning("the %ss grace period is over: stopping the running task", self.grace)
            if self.forced and self.interruptible:  # the handler clears it when it raises: one wake-up
                signal.pthread_kill(threading.main_thread().ident or 0, WAKE_SIGNAL)
            if (not deadline_done and self.margin is not None and self.grace is not None
                    and now >= stopped_at + self.grace + self.margin):
                deadline_done = True
                self._call(self.on_deadline, "on_deadline")
        # Closed: a stop forced at once (two signals together) can end the worker before the next tick.
        # Say what was received all the same; the worker's exit released what on_stop would have.
        self._log_stops(self.received, seen)

    def _log_stops(self, received: int, seen: int) -> None:
        if received > seen == 0:
            logger.warning("%s received: stopping (no new message; a running task has %s to finish; "
                           "send it again to release everything now)", self.cause(),
                           "unlimited time" if self.grace is None else f"{self.grace}s")
        if received >= 2 > seen:
            logger.warning("%s received again: releasing everything now", self.cause())

    def _first_stop(self) -> None:
        self._call(self.on_stop, "on_stop")

    @staticmethod
    def _call(callback: Callable[[], None] | None, name: str) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            logger.exception("the worker's shutdown step %s failed", name)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closed.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(1.0)  # a callback stuck in a call is left behind: the thread is a daemon
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _disregard(signum: int, frame: FrameType | None) -> None:
    """A stop signal a pool's child leaves to its parent (the terminal and systemd signal the whole group)."""


def send_shutdown(pid: int, signum: int = signal.SIGUSR1) -> None:
    """Nudge a pool child to look at its stop count (its :class:`ShutdownSignals` listens to ``signum``);
    a no-op if it is gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
