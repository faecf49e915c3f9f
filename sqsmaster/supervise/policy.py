"""``HeartbeatPolicy``: when a task is past its deadline, when its lease is due a heartbeat, what interrupts it.

Pure decisions from an injected clock: no I/O, no signals, no threads of its own.
Both isolation modes drive the same policy. The deadline side (SIGALRM in signal
isolation, the parent's wait in process isolation) asks :meth:`HeartbeatPolicy.due_interrupt`
and :meth:`HeartbeatPolicy.next_tick`; the heartbeat thread asks :meth:`HeartbeatPolicy.beat_due`
and reports with :meth:`HeartbeatPolicy.beat_done`.

An interrupt, once fired, is sticky: the policy keeps it and asks for it to be
raised again every :data:`STICKY_PERIOD` seconds until ``run()`` returns, so a
task that swallows one (a bare ``except:``, a ``return`` in ``finally``) still
stops, and its message is never deleted. One that never reached the task (fired as the task ended on
its own) is dropped when ``run()`` is over: the first to happen wins.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..errors import ConfigurationError, HandlerInterrupt, HardTimeoutExceeded, TaskAbandoned
from ..limits import (  # noqa: F401  (the heartbeat's call bounds, shared with the prefetch heartbeat)
    HEARTBEAT_RETRY_DELAY,
    MAX_CALL_TIMEOUT,
    MIN_CALL_TIMEOUT,
    heartbeat_call_timeout,
)

#: What a task does once its lease is lost: run on to its end, or be stopped.
ON_LEASE_LOST = ("continue", "stop")
#: A fired interrupt is raised again this often (seconds) until run() returns.
STICKY_PERIOD = 1.0
#: Shortest timer the deadline arms; setitimer(0) would mean "off".
MIN_TICK = 0.001

#: Builds the interrupt to raise, given the seconds since the task started (a fresh one each time).
InterruptFactory = Callable[[float], HandlerInterrupt]


class HeartbeatPolicy:
    """When to stop a task and when to extend its lease; one policy for every isolation mode.

    :param sqs_timeout: visibility each heartbeat sets (s)
    :param alarm_timeout: heartbeat period (s)
    :param hard_timeout: the deadline, counted from the policy's creation (s)
    :param clock: monotonic seconds (injectable: tests drive it by hand)
    :param on_lease_lost: ``"continue"`` or ``"stop"`` (see :meth:`lease_lost_interrupt`)

    A failed heartbeat is retried after :data:`HEARTBEAT_RETRY_DELAY`; it never
    moves the deadline. Thread safety: the deadline side and the heartbeat
    thread each write their own fields; :meth:`fire` keeps the first interrupt
    whichever thread fires it.
    """

    def __init__(self, sqs_timeout: float, alarm_timeout: float, hard_timeout: float,
                 clock: Callable[[], float] = time.monotonic, on_lease_lost: str = "continue") -> None:
        if on_lease_lost not in ON_LEASE_LOST:
            raise ConfigurationError(f"on_lease_lost={on_lease_lost!r}; choose one of {', '.join(ON_LEASE_LOST)}")
        self.sqs_timeout = sqs_timeout
        self.alarm_timeout = alarm_timeout
        self.hard_timeout = hard_timeout
        self.on_lease_lost = on_lease_lost
        self._clock = clock
        self.started_at = clock()
        self.deadline = self.started_at + hard_timeout
        self.next_beat_at = self.started_at + alarm_timeout
        # A list, not a field: list.append is atomic, so the first interrupt wins across threads.
        self._interrupts: list[InterruptFactory] = []
        self._last_raised: float | None = None
        self._reached = False  # the fired interrupt was raised into the task (or kept it from starting)
        self._closed = False
        # fire() (heartbeat thread) and close() (main thread) must not interleave: an interrupt appended
        # after close() looked would outlive it. Reentrant: a SIGALRM tick may fire during close().
        self._lock = threading.RLock()

    # -- time -----------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    def time_to_deadline(self) -> float:
        """Seconds until the hard timeout (negative once past it)."""
        return self.deadline - self._clock()

    # -- the lease --------------------------------------------------------------------------------

    @property
    def call_timeout(self) -> float:
        """How long one heartbeat call may take (see :func:`heartbeat_call_timeout`)."""
        return heartbeat_call_timeout(self.sqs_timeout, self.alarm_timeout)

    def needs_initial_extension(self, received_visibility: float | None, remaining: float | None) -> bool:
        """True unless the receive already hid the message for ``sqs_timeout`` with time to spare."""
        if received_visibility is None or received_visibility < self.sqs_timeout:
            return True
        return remaining is None or remaining < self.alarm_timeout + 1

    def beat_due(self) -> bool:
        return self._clock() >= self.next_beat_at

    def beat_lag(self) -> float:
        """How late (s) a heartbeat made now is against its schedule (0 when not yet due): asked as a beat
        starts, it measures how long the heartbeat thread waited for the GIL or for the CPU."""
        return max(0.0, self._clock() - self.next_beat_at)

    def time_to_beat(self) -> float:
        """Seconds until the next heartbeat is due (0 when overdue)."""
        return max(0.0, self.next_beat_at - self._clock())

    def beat_done(self, ok: bool) -> None:
        """Schedule the next heartbeat: a full period after a success, sooner after a failure."""
        period = self.alarm_timeout if ok else min(self.alarm_timeout, HEARTBEAT_RETRY_DELAY)
        self.next_beat_at = self._clock() + period

    def lease_lost_interrupt(self, message_id: str | None) -> InterruptFactory | None:
        """What to fire once the lease is lost: TaskAbandoned with ``on_lease_lost="stop"``, else None."""
        if self.on_lease_lost != "stop":
            return None
        return lambda elapsed: TaskAbandoned(message_id, elapsed)

    # -- interrupts -------------------------------------------------------------------------------

    def fire(self, make: InterruptFactory) -> None:
        """Stop the task with ``make(elapsed)``; the first interrupt fired wins.

        Ignored between :meth:`close` and :meth:`open`: once run() returned, a late
        "stuck" or lease loss no longer concerns the task.
        """
        with self._lock:
            if not self._closed:
                self._interrupts.append(make)

    @property
    def fired(self) -> bool:
        return bool(self._interrupts)

    def interrupt(self) -> HandlerInterrupt | None:
        """A fresh instance of the fired interrupt (None if none fired)."""
        return self._interrupts[0](self.elapsed()) if self._interrupts else None

    def take_interrupt(self) -> HandlerInterrupt | None:
        """The fired interrupt, to raise into the task now (None if none fired): from now on it is the task's
        end even if the task swallows it and returns."""
        interrupt = self.interrupt()
        if interrupt is not None:
            self._reached = True
        return interrupt

    def due_interrupt(self) -> HandlerInterrupt | None:
        """At a tick of the deadline: the interrupt to raise now, or None.

        Fires the hard timeout once the deadline has passed. A fired interrupt is
        raised at most once per :data:`STICKY_PERIOD` (two ticks landing together,
        the timer's and the heartbeat thread's, raise once).
        """
        now = self._clock()
        if now >= self.deadline:
            self.fire(lambda elapsed: HardTimeoutExceeded(self.hard_timeout, elapsed))
        if not self._interrupts:
            return None
        if self._last_raised is not None and now - self._last_raised < STICKY_PERIOD / 2:
            return None
        self._last_raised = now
        return self.take_interrupt()

    def next_tick(self) -> float:
        """Seconds to the next tick of the deadline: the next heartbeat or the deadline, whichever
        comes first; once an interrupt fired, the next time to raise it again."""
        now = self._clock()
        if self._interrupts:
            last = now if self._last_raised is None else self._last_raised
            return max(MIN_TICK, last + STICKY_PERIOD - now)
        to_beat = self.next_beat_at - now
        if to_beat <= 0:  # the heartbeat thread is behind (a slow call): look again later, not in a storm
            to_beat = min(self.alarm_timeout, HEARTBEAT_RETRY_DELAY)
        return max(MIN_TICK, min(to_beat, self.deadline - now))

    def open(self) -> None:
        """run() starts: interrupts count again (they do from the policy's creation until the first close)."""
        self._closed = False

    def close(self, ended_first: bool = False) -> None:
        """run() is over: interrupts fired from now on no longer concern the task, and one that fired but never
        reached it (it ended on its own meanwhile) is dropped; so is one that reached a task already ended
        (``ended_first``: a task process that had sent back its result). The first to happen wins."""
        with self._lock:
            self._closed = True
            if ended_first or not self._reached:
                self._interrupts.clear()
                self._reached = False
