"""All of sqsmaster's signal code. Nothing else calls ``signal.*``.

Two roles: the SIGALRM ticker of signal isolation (:class:`Alarm`), and the
process-group signalling of process isolation (:func:`kill_group`,
:func:`prepare_child`, :func:`watch_parent`, :func:`signal_name`).

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
