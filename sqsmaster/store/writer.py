"""The background writer: a worker's only way to the job store, so a slow store never slows a task.

A worker process has one :class:`StoreWriter`: a bounded queue and one thread that
makes the store calls. ``submit(op)`` only appends to the queue: it never waits for
the store, so a frozen DynamoDB endpoint or a locked SQLite file cannot delay a
heartbeat, a deadline or a delete. When the queue is full the oldest write is
dropped (and counted). Heartbeats coalesce: a write submitted with a ``key`` replaces
the pending write of that key (only an attempt's latest heartbeat matters). The
thread also runs periodic jobs (the worker's own heartbeat, reading operator flags,
expiry) between writes.

A store that fails is logged once when the outage starts ("job store X unreachable:
N records lost so far") and once when it answers again, with how many records the
outage cost; nothing else is retried, so an outage loses at most its own records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from itertools import count
from typing import Any, Callable, Hashable

from .base import JobStore, StoreError

logger = logging.getLogger(__name__)

#: Writes waiting for the store before the oldest is dropped: hours of one worker's heartbeats.
DEFAULT_CAPACITY = 10_000
#: How long :meth:`StoreWriter.close` waits by default for pending writes (s).
CLOSE_TIMEOUT = 5.0
#: After a failure to open the store, how long before the next try (s).
REOPEN_DELAY = 5.0

#: A write or a read: called with the store, in the writer thread.
Op = Callable[[JobStore], Any]


class _Answer:
    """The result of :meth:`StoreWriter.ask`, handed from the writer thread to the caller."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Periodic:
    def __init__(self, period: float, op: Op, due: float) -> None:
        self.period, self.op, self.due = period, op, due


class StoreWriter:
    """One thread that makes every store call of a worker process.

    :param opener: makes the store (called in the writer thread, again after :data:`REOPEN_DELAY`
        if it fails: a store down at start is an outage like any other)
    :param url: the store's URL, for the log
    :param capacity: writes kept waiting before the oldest is dropped
    :param clock: monotonic seconds (periodic jobs and close are timed by it)
    :param thread_setup: called first in the writer thread (a worker blocks the signals its main thread
        must get there)
    """

    def __init__(self, opener: Callable[[], JobStore], url: str, capacity: int = DEFAULT_CAPACITY,
                 clock: Callable[[], float] = time.monotonic, thread_setup: Callable[[], None] | None = None) -> None:
        self.url = url
        self.capacity = capacity
        self._opener = opener
        self._clock = clock
        self._store: JobStore | None = None
        self._next_open = 0.0
        self._pending: OrderedDict[Hashable, Op] = OrderedDict()
        self._asks: list[tuple[Op, _Answer]] = []
        self._periodic: list[_Periodic] = []
        self._seq = count()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._busy_since: float | None = None
        self._hung = False  # an ask timed out and its call is still in progress
        self._kind = ""
        #: Writes made, writes that failed, writes dropped because the queue was full.
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self._down = False
        self._lost_at_outage = 0
        self._thread_setup = thread_setup
        self._thread = threading.Thread(target=self._serve, name="sqsmaster-store-writer", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Records that never reached the store: failed writes plus dropped ones."""
        return self.failed + self.dropped

    @property
    def down(self) -> bool:
        """True while the store is known not to answer (since its last call failed)."""
        return self._down

    def submit(self, op: Op, key: Hashable | None = None) -> None:
        """Queue a write; returns at once. With ``key``, it replaces the pending write of that key (in its
        place in the queue). When the queue is full the oldest write is dropped. Ignored after close."""
        with self._cond:
            if self._closing:
                return
            if key is not None and key in self._pending:
                self._pending[key] = op
                return
            if len(self._pending) >= self.capacity:
                self._pending.popitem(last=False)
                self.dropped += 1
                self._note_loss("its write queue is full")
            self._pending[key if key is not None else ("op", next(self._seq))] = op
            self._cond.notify()

    def every(self, period: float, op: Op, first: float | None = None) -> None:
        """Run ``op`` in the writer thread every ``period`` seconds (first after ``first``, default
        ``period``), between writes. What it raises is logged at debug level and ignored."""
        with self._cond:
            self._periodic.append(_Periodic(period, op, self._clock() + (period if first is None else first)))
            self._cond.notify()

    def ask(self, op: Op, timeout: float) -> Any:
        """Run ``op`` in the writer thread before any pending write and return its result, waiting at most
        ``timeout`` seconds. Raises StoreError if the store failed, did not answer in time, or is down."""
        answer = _Answer()
        with self._cond:
            if self._closing:
                raise StoreError(f"job store {self.url}: the writer is closed")
            if self._hung or (self._busy_since is not None and self._clock() - self._busy_since > timeout):
                # A call has hung longer than a caller may wait: do not make every caller wait it out.
                raise StoreError(f"job store {self.url} is still in a call that did not answer")
            self._asks.append((op, answer))
            self._cond.notify()
        if not answer.done.wait(timeout):
            with self._cond:
                self._hung = not answer.done.is_set()
            raise StoreError(f"job store {self.url} did not answer within {timeout:g}s")
        if answer.error is not None:
            raise StoreError(f"job store {self.url}: {answer.error}")
        return answer.value

    def close(self, timeout: float = CLOSE_TIMEOUT) -> int:
        """Write what is pending, within ``timeout`` seconds; returns how many writes were not made (they are
        logged). The store is closed by the thread once it is done; a thread stuck in a call is abandoned."""
        deadline = self._clock() + max(timeout, 0.0)
        with self._cond:
            self._closing = True
            self._cond.notify()
            while (self._pending or self._busy) and self._clock() < deadline:
                self._cond.wait(min(0.05, max(deadline - self._clock(), 0.0)))
            left = len(self._pending)
            self._pending.clear()
            writing = int(self._busy and self._kind == "write")
        self._thread.join(max(min(deadline - self._clock(), 0.5), 0.0))
        with self._cond:
            down, lost_in_outage = self._down, self.lost - self._lost_at_outage
        if down:  # its end is never logged: say here what it lost, not only its first record
            logger.error("job store %s still unreachable at the worker's end: %d record(s) lost during the outage "
                         "(%d in all)", self.url, lost_in_outage, self.lost)
        if left or writing:
            logger.error("job store %s: %d record(s) not written within %.1fs of the worker's end (%d lost in all)",
                         self.url, left + writing, timeout, self.lost + left + writing)
        return left + writing

    # -- the writer thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        while True:
            job = self._next_job()
            if job is None:
                break
            kind, op, answer = job
            self._run(kind, op, answer)
            with self._cond:
                self._busy = self._hung = False
                self._busy_since = None
                self._cond.notify_all()
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                logger.debug("job store %s: close failed", self.url, exc_info=True)

    def _next_job(self) -> tuple[str, Op, Any] | None:
        """The next call to make: an ask, a due periodic job, a write; None once closed and drained."""
        with self._cond:
            self._busy_since = None
            while True:
                if self._asks:
                    op, answer = self._asks.pop(0)
                    self._busy, self._busy_since, self._kind = True, self._clock(), "ask"
                    return "ask", op, answer
                now = self._clock()
                due = [job for job in self._periodic if job.due <= now] if not self._closing else []
                if due:
                    due[0].due = now + due[0].period
                    self._busy, self._busy_since, self._kind = True, self._clock(), "periodic"
                    return "periodic", due[0].op, None
                if self._pending:
                    _, op = self._pending.popitem(last=False)
                    self._busy, self._busy_since, self._kind = True, self._clock(), "write"
                    return "write", op, None
                if self._closing:
                    return None
                waits = [job.due - now for job in self._periodic]
                self._cond.wait(min(waits) if waits else None)

    def _run(self, kind: str, op: Op, answer: _Answer | None) -> None:
        try:
            store = self._open()
            value = op(store)
        except Exception as exc:
            if answer is not None:
                answer.error = exc
                answer.done.set()
            elif kind == "write":
                with self._cond:
                    self.failed += 1
                    self._note_loss(str(exc).replace(f"job store {self.url}: ", ""))
            else:
                logger.debug("job store %s: a periodic call failed: %s", self.url, exc)
            return
        if answer is not None:
            answer.value = value
            answer.done.set()
        if kind == "write":
            with self._cond:
                self.written += 1
                self._note_recovery()

    def _open(self) -> JobStore:
        if self._store is None:
            if self._clock() < self._next_open:
                raise StoreError(f"job store {self.url} could not be opened")
            try:
                self._store = self._opener()
            except Exception:
                self._next_open = self._clock() + REOPEN_DELAY
                raise
        return self._store

    def _note_loss(self, why: str) -> None:
        """Called under the lock when a record is lost: the first loss of an outage is logged."""
        if self._down:
            return
        self._down = True
        self._lost_at_outage = self.lost - 1
        logger.error("job store %s unreachable (%s): %d record(s) lost so far; tasks go on, and records are "
                     "written again once it answers", self.url, why, self.lost)

    def _note_recovery(self) -> None:
        if not self._down:
            return
        self._down = False
        logger.warning("job store %s answers again: %d record(s) lost during the outage (%d in all)", self.url,
                       self.lost - self._lost_at_outage, self.lost)
