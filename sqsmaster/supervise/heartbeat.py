"""The heartbeat thread: keeps a message hidden while its task runs, in both isolation modes.

It makes every visibility call of a running task (never a signal handler, never
the task's own client: the lease calls through a twin of its own, each call
bounded, see :mod:`sqsmaster.lease`), asks ``running()``, and turns a stuck task
or a lost lease (with ``on_lease_lost="stop"``) into an interrupt request that the
supervisor delivers: in signal isolation a flag plus a SIGALRM to the main
thread, in process isolation a kill of the task's process group.

It wakes on its own schedule (the policy's next heartbeat), so it beats between
``__enter__`` and ``run()`` and in ``__exit__`` too; in signal isolation every
SIGALRM tick wakes it as well. :meth:`Heartbeat.stop` is bounded: a thread stuck
in a call on an endpoint that does not answer is abandoned (a daemon), starts
no call after the stop, and its late result is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Callable, Iterator

from ..errors import TaskStuck
from ..lease import Lease
from .policy import HeartbeatPolicy, InterruptFactory

logger = logging.getLogger(__name__)

#: How long stop() waits for the thread (s); a call still in flight after that is abandoned.
JOIN_TIMEOUT = 0.5
#: How long a fork waits for the thread to finish the heartbeat it is making (s).
QUIET_TIMEOUT = 1.0


class Heartbeat:
    """A thread that extends ``lease`` on ``policy``'s schedule and asks ``running()`` at each beat.

    ``interrupt(make)`` is called (from the thread) when the task must stop:
    ``running()`` returned False or raised, or the lease was lost and the policy
    says stop. :meth:`wake` is safe to call from a signal handler in the main
    thread, even one that lands while the same handler is already running there:
    it only releases a lock (the thread waits by acquiring it), which takes no
    other lock at the Python level. (``threading.Event.set`` would: a tick landing
    inside it, holding its condition, deadlocks on the second ``set``.)
    """

    def __init__(self, policy: HeartbeatPolicy, lease: Lease, running: Callable[[], bool],
                 interrupt: Callable[[InterruptFactory], None]) -> None:
        self.policy = policy
        self.lease = lease
        self._running = running
        self._interrupt = interrupt
        # A wake-up token: held while there is none; wake() releases it, the thread's acquire takes it.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a beat is being made (see quiet())
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sqsmaster-heartbeat-{self.lease.message_id}",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the schedule now (a SIGALRM tick, or stop())."""
        try:
            self._wake.release()
        except RuntimeError:
            pass  # a wake-up is pending already

    def stop(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Make no new call from now on; wait up to ``timeout`` for a call in flight, then abandon it."""
        with self._lock:
            self._stopped = True
        self.wake()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("message %s: a heartbeat call still in flight after %.1fs is abandoned; "
                           "its result will be ignored", self.lease.message_id, timeout)

    @contextlib.contextmanager
    def quiet(self, timeout: float = QUIET_TIMEOUT) -> Iterator[None]:
        """Hold off new beats (waiting up to ``timeout`` for the one being made): around a fork,
        so the child does not inherit a lock (stderr's, a connection pool's) taken mid-beat."""
        acquired = self._busy.acquire(timeout=timeout)
        try:
            yield
        finally:
            if acquired:
                self._busy.release()

    def _run(self) -> None:
        if hasattr(signal, "pthread_sigmask"):
            # SIGALRM is for the main thread, whose sleeping or waiting task it must interrupt.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            self._wake.acquire(timeout=self.policy.time_to_beat())
            with self._lock:
                if self._stopped:
                    return
            if not self.policy.beat_due():
                continue
            with self._busy:
                with self._lock:  # checked again under the lock stop() takes: no call starts after stop()
                    if self._stopped:
                        return
                try:
                    self._beat()
                except Exception:  # a bug here must not end the heartbeats silently
                    logger.exception("message %s: heartbeat failed", self.lease.message_id)
                    self.policy.beat_done(False)

    def _beat(self) -> None:
        ok = False
        try:
            if not self._is_running():
                self._interrupt(lambda elapsed: TaskStuck(elapsed))
            if not self.lease.lost:
                # A lost lease is not retried: its beats go back to the plain period.
                ok = self.lease.extend(self.policy.sqs_timeout) or self.lease.lost
            if self.lease.lost:
                make = self.policy.lease_lost_interrupt(self.lease.message_id)
                if make is not None:
                    self._interrupt(make)
        finally:
            self.policy.beat_done(ok)

    def _is_running(self) -> bool:
        try:
            return bool(self._running())
        except Exception:
            logger.exception("message %s: running() raised; the task is treated as stuck", self.lease.message_id)
            return False
