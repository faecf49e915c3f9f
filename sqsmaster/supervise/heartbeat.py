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
no call after the stop, and its late result is ignored. The process keeps its
heartbeat threads for the next handler: starting one per handler (and waiting
for it to be scheduled) cost a no-op task ten times its supervision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterator

from ..errors import TaskStuck
from ..lease import Lease
from .policy import HeartbeatPolicy, InterruptFactory

logger = logging.getLogger(__name__)

#: How long stop() waits for a call in flight (s); after that the call is abandoned.
JOIN_TIMEOUT = 0.5
#: How long a fork waits for the thread to finish the heartbeat it is making (s).
QUIET_TIMEOUT = 1.0


class _Runner:
    """A daemon thread that runs heartbeat loops one after another, idle in between: a handler that
    lasts a millisecond must not pay for starting a thread (and waiting for it to be scheduled)."""

    def __init__(self, pool: "_Runners") -> None:
        self._pool = pool
        self._job: Callable[[], None] | None = None
        self._given = threading.Lock()  # a token: released when a job is given
        self._given.acquire()
        threading.Thread(target=self._serve, name="sqsmaster-heartbeat", daemon=True).start()

    def give(self, job: Callable[[], None]) -> None:
        self._job = job
        self._given.release()

    def _serve(self) -> None:
        if hasattr(signal, "pthread_sigmask"):
            # SIGALRM is for the main thread, whose sleeping or waiting task it must interrupt.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            self._given.acquire()
            job, self._job = self._job, None
            try:
                if job is not None:
                    job()
            except BaseException:  # never die with a job half done: the next handler would wait in vain
                logger.exception("heartbeat thread: a heartbeat loop failed")
            self._pool.idle(self)


class _Runners:
    """The process's heartbeat threads: an idle one takes the next loop, a new one starts when none is
    idle (the first handler, or while an abandoned call keeps one busy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Runner] = []

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            runner = self._idle.pop() if self._idle else None
        (runner or _Runner(self)).give(job)

    def idle(self, runner: _Runner) -> None:
        with self._lock:
            self._idle.append(runner)

    def forget(self) -> None:
        """In a forked child: the threads stayed in the parent."""
        self._lock = threading.Lock()
        self._idle = []


_RUNNERS = _Runners()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RUNNERS.forget)


class Heartbeat:
    """Extends ``lease`` on ``policy``'s schedule and asks ``running()`` at each beat, on a thread.

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
        self._in_call = False
        self._call_done = threading.Event()

    def start(self) -> None:
        _RUNNERS.run(self._run)

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
            in_call = self._in_call
        self.wake()
        if in_call and not self._call_done.wait(timeout):
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
        while True:
            self._wake.acquire(timeout=self.policy.time_to_beat())
            with self._lock:  # the lock stop() takes: no call starts once it said stop
                if self._stopped:
                    return
                if not self.policy.beat_due():
                    continue
                self._in_call = True
                self._call_done.clear()
            try:
                with self._busy:
                    self._beat()
            except Exception:  # a bug here must not end the heartbeats silently
                logger.exception("message %s: heartbeat failed", self.lease.message_id)
                self.policy.beat_done(False)
            finally:
                with self._lock:
                    self._in_call = False
                self._call_done.set()

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
