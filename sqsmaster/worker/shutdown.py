"""A worker's shutdown, bounded by the clock: what a stopping worker still owes, and a pool's signals.

SIGTERM (a platform scaling in) gives a worker ``--grace`` seconds for its running
task; then whatever the endpoint does, the worker is gone within :data:`SHUTDOWN_MARGIN`
more seconds, and a pool within :data:`POOL_KILL_MARGIN`. What it could not do in that
time (the delete of a task that succeeded, the release of a received message) is
logged by message id: those messages come back when their visibility expires, and a
succeeded task may run again (at-least-once). :func:`release_now` makes the releases
with bounded calls.

A pool's parent counts every SIGTERM/SIGINT (:class:`CountedSignals`, two a millisecond
apart are two) and passes the count to its children through shared memory; the children
die with it (:func:`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import time
from collections import defaultdict
from types import FrameType, TracebackType
from typing import Any, Callable

from .signals import WAKE_SIGNAL

logger = logging.getLogger("sqsmaster.worker")

#: A worker process exits at the latest this long after its grace ran out (s): its task stopped and
#: released, then deletes and releases flushed, each call bounded; what is left then is logged and given up.
SHUTDOWN_MARGIN = 8.0
#: How long a stopping worker spends flushing its deletes and releases once its task is done (s).
FLUSH_TIMEOUT = 3.0
#: A pool SIGKILLs a worker process still alive this long after the grace (s): later than the worker's own
#: deadline, for a task stuck in C code that holds the GIL (no Python thread can run to end it).
POOL_KILL_MARGIN = SHUTDOWN_MARGIN + 2.0
#: prctl(2) option: the signal the kernel sends us when the parent that forked us dies (Linux only).
_PR_SET_PDEATHSIG = 1


def release_now(messages: list[Any], route: Callable[[Any], Any], deadline: float,
                clock: Callable[[], float] = time.monotonic) -> tuple[list[Any], list[Any]]:
    """Make ``messages`` visible again at once (visibility 0), ten to a call through ``route(queue)``.

    Returns ``(released, not released)``; each is logged by message id. No call is started
    after ``deadline`` (monotonic); those messages come back after their visibility timeout.
    Never raises.
    """
    by_queue: dict[Any, list[Any]] = defaultdict(list)
    for message in messages:
        by_queue[message.queue].append(message)
    released: list[Any] = []
    failed: list[tuple[Any, str]] = []
    for queue, batch in by_queue.items():
        for start in range(0, len(batch), 10):
            chunk = batch[start:start + 10]
            if clock() >= deadline:
                failed += [(message, "no time left before the shutdown deadline") for message in chunk]
                continue
            try:
                errors = {int(e["Id"]): str(e.get("Message") or e.get("Code"))
                          for e in route(queue).change_visibility_batch([(m.receipt_handle, 0) for m in chunk])}
            except Exception as exc:
                errors = {index: f"{type(exc).__name__}: {exc}" for index in range(len(chunk))}
            for index, message in enumerate(chunk):
                if index in errors:
                    failed.append((message, errors[index]))
                else:
                    released.append(message)
    for message in released:
        logger.info("released message %s (received, not started): visible again now", message.message_id)
    for message, reason in failed:
        logger.error("message %s: received, not started, and could not be released (%s); it comes back when its "
                     "visibility timeout expires", message.message_id, reason)
    return released, [message for message, _ in failed]


def _disregard(signum: int, frame: FrameType | None) -> None:
    """The byte the C-level handler wrote to the wakeup pipe is what counts."""


class CountedSignals:
    """Count every SIGTERM/SIGINT this process receives, even two a millisecond apart (a pool's parent).

    Python runs a signal's handler once for however many deliveries arrived before it
    could run, so counting in the handler loses signals that come close together. Here
    the C-level handler writes one byte per delivery to a pipe (``signal.set_wakeup_fd``)
    and :meth:`wait` reads them. A context manager for the main thread of a process that
    runs no task code; ``__exit__`` restores the handlers and the wakeup fd.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._reader = self._writer = -1

    def __enter__(self) -> "CountedSignals":
        self._reader, self._writer = os.pipe()
        os.set_blocking(self._reader, False)
        os.set_blocking(self._writer, False)
        self._previous_fd = signal.set_wakeup_fd(self._writer, warn_on_full_buffer=False)
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, _disregard)  # the byte in the pipe is what counts
        return self

    def wait(self, timeout: float, fds: tuple[int, ...] = ()) -> list[int]:
        """Wait up to ``timeout`` s for a signal or for one of ``fds`` to be readable; the signals received."""
        poller = select.poll()
        for fd in (self._reader, *fds):
            poller.register(fd, select.POLLIN)
        try:
            poller.poll(max(0, int(timeout * 1000)))
        except InterruptedError:
            pass
        received: list[int] = []
        while True:
            try:
                data = os.read(self._reader, 4096)
            except BlockingIOError:
                break
            received += [signum for signum in data if signum in self.signals]
            if not data:
                break
        return received

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        os.close(self._reader)
        os.close(self._writer)


def forget_parent_signals() -> None:
    """In a freshly forked pool child: stop writing into the parent's signal pipe (the wakeup fd is
    inherited across fork, and the child's deliveries must not count as the parent's)."""
    signal.set_wakeup_fd(-1)


def pool_child_signals() -> set[int]:
    """The signals a pool's parent keeps blocked while it forks: the child unblocks them
    (:func:`unblock_signals`) once its own handlers are in place, so none reaches it in between."""
    return {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, WAKE_SIGNAL}


def block_signals(signals: set[int]) -> set[int]:
    """Block ``signals`` in this thread; returns the mask before."""
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, signals))


def unblock_signals(signals: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def die_with_parent(parent_pid: int) -> bool:
    """In a pool child: ask Linux to SIGKILL us when our parent dies; exits at once (code 70) if it already
    died. False where prctl is unavailable (the worker loop then watches its parent pid instead)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the loaded libc; find_library would spawn ldconfig
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if armed and os.getppid() != parent_pid:
        os._exit(70)  # the parent died between fork and prctl: nobody would supervise us
    return armed
