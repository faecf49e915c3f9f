"""All of sqsmaster's signal code. Nothing else calls ``signal.*``.

Three roles: the SIGALRM ticker of signal isolation (:class:`Alarm`); the
process-group signalling of process isolation (:func:`kill_group`,
:func:`prepare_child`, :func:`watch_parent`, :func:`signal_name`); and the
worker's graceful shutdown on SIGTERM/SIGINT (:class:`ShutdownSignals`).

Timing uses ``signal.setitimer`` (float seconds, not ``signal.alarm``'s whole
seconds). The previous SIGALRM handler, and any outer timer, are restored on exit.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
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


# -- process isolation: signalling a task's process group ---------------------------------------

#: The signal that cannot be caught or ignored.
KILL = int(signal.SIGKILL)
#: prctl(2) option: the signal the kernel sends us when our parent thread dies (Linux only).
PR_SET_PDEATHSIG = 1
#: Dispositions a forked task gets back: the worker's own handlers (graceful shutdown, SIGALRM
#: ticks) must not run inside the task, and SIGTERM must kill it.
_RESET_IN_CHILD = ("SIGTERM", "SIGINT", "SIGHUP", "SIGALRM", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGQUIT")


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11; ``signal 99`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> bool:
    """Send ``signum`` to every process of group ``pgid``; False when the group is already empty."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        logger.warning("cannot signal process group %s: %s", pgid, exc)
        return False
    return True


def kill_process(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` (default SIGKILL) to one process; ignored when it is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def terminate_signal() -> int:
    """The polite stop signal sent first to a timed-out task's group (SIGTERM)."""
    return int(signal.SIGTERM)


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL us when our parent dies; False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the loaded libc; find_library would spawn ldconfig
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def prepare_child(parent_pid: int) -> None:
    """In a freshly forked task process: lead a new session, die with the parent, default signals.

    The new session makes the task the leader of its own process group, so a
    group kill reaches its grandchildren (``subprocess``, ``os.system``).
    Exits at once (code 70) if the parent died before PR_SET_PDEATHSIG took effect.
    """
    os.setsid()
    signal.setitimer(signal.ITIMER_REAL, 0)
    for name in _RESET_IN_CHILD:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if _die_with_parent() and os.getppid() != parent_pid:
        os._exit(70)  # the parent died between fork and prctl: nobody supervises us


def watch_parent(parent_pid: int, pgid: int, poll: float = 0.5) -> None:
    """Block until ``parent_pid`` dies, then SIGKILL the whole group ``pgid``; never returns.

    Runs in a small watchdog process inside the task's group, so grandchildren,
    which PR_SET_PDEATHSIG does not cover, die with the worker too.
    """
    pidfd = -1
    try:
        pidfd = os.pidfd_open(parent_pid) if hasattr(os, "pidfd_open") else -1
    except OSError:
        pidfd = -1
    try:
        while True:
            if pidfd >= 0:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll()
                break
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(poll)
    finally:
        kill_group(pgid, signal.SIGKILL)
        os._exit(0)


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
