"""What a worker tells its observers (the job store's recorder, the metrics): the life of each attempt.

An observer subclasses :class:`WorkerEvents` and overrides what it needs. Every method
must return at once and never raise into the worker (:class:`Observers` logs and swallows
what escapes): a slow observer hands its work to a thread of its own. ``heartbeat`` is
called on the task's heartbeat thread, once per beat, just before the lease is extended;
``keep_running`` there may say False to stop the task as a hard timeout would, and
``kill_order`` may order it killed (outcome ``killed``); ``cancelled`` names received
messages to delete unrun.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .worklog import AttemptRecord

logger = logging.getLogger(__name__)


@dataclass
class AttemptStart:
    """An attempt that is about to run: who, what, and its clock (wall-clock seconds since the epoch).
    ``deadline`` is when its hard timeout fires; ``lease`` the visibility timeout its heartbeat keeps."""

    message_id: str
    queue_url: str
    task: str
    attempt: int
    kwargs: dict[str, Any]
    started: float
    deadline: float
    lease: float
    isolation: str
    submitted: float | None = None


@dataclass
class KillOrder:
    """An observer's order to stop a running attempt (an operator's kill): ``reason`` goes into the log and
    the outcome's exception; ``then`` is what becomes of the message: ``release``, ``dead-letter``, ``delete``."""

    reason: str
    then: str = "dead-letter"


class WorkerEvents:
    """An observer of one worker process; the default methods do nothing."""

    def attempt_started(self, start: AttemptStart) -> None:
        """The attempt's handler is about to take the lease and run the task."""

    def heartbeat(self, start: AttemptStart, at: float, beats: int) -> None:
        """A heartbeat tick of a running attempt (the ``beats``-th), on the heartbeat thread."""

    def heartbeat_lag(self, start: AttemptStart, lag: float) -> None:
        """How late (s) the heartbeat being made ran after its schedule: in signal isolation a task that
        holds the GIL (C code) starves the heartbeat thread, and this is what shows it. On the heartbeat thread."""

    def keep_running(self, start: AttemptStart) -> bool:
        """Asked at each heartbeat tick: False stops the task (an operator's kill)."""
        return True

    def kill_order(self, start: AttemptStart) -> KillOrder | None:
        """Asked at each heartbeat tick, on the heartbeat thread (answer from memory): an order to kill the
        task (outcome ``killed``, then the order's ``then``), or None."""
        return None

    def cancelled(self, message_ids: list[str]) -> set[str]:
        """Asked once per received batch, before any of it runs: the ids to delete unrun (outcome
        ``cancelled``). Must answer within a second or so: the batch waits for it."""
        return set()

    def kill_requested(self, start: AttemptStart) -> None:
        """An observer's ``keep_running`` said False: the task is being stopped (told at each tick until it is)."""

    def attempt_ended(self, record: AttemptRecord) -> None:
        """The attempt ended and what became of its message is settled."""

    def close(self, timeout: float) -> None:
        """The worker is stopping: flush within ``timeout`` seconds."""


class Observers(WorkerEvents):
    """Many observers as one; what one of them raises is logged and does not reach the worker."""

    def __init__(self, observers: Iterable[WorkerEvents] = ()) -> None:
        self.observers = list(observers)

    def _each(self, method: str, message_id: str | None, *args: Any) -> list[Any]:
        results = []
        for observer in self.observers:
            try:
                results.append(getattr(observer, method)(*args))
            except Exception:
                logger.exception("message %s: observer %s.%s failed", message_id, type(observer).__name__, method)
        return results

    def attempt_started(self, start: AttemptStart) -> None:
        self._each("attempt_started", start.message_id, start)

    def heartbeat(self, start: AttemptStart, at: float, beats: int) -> None:
        self._each("heartbeat", start.message_id, start, at, beats)

    def heartbeat_lag(self, start: AttemptStart, lag: float) -> None:
        self._each("heartbeat_lag", start.message_id, start, lag)

    def keep_running(self, start: AttemptStart) -> bool:
        keep = all(result is not False for result in self._each("keep_running", start.message_id, start))
        if not keep:
            self._each("kill_requested", start.message_id, start)
        return keep

    def kill_order(self, start: AttemptStart) -> KillOrder | None:
        return next((order for order in self._each("kill_order", start.message_id, start) if order), None)

    def cancelled(self, message_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for ids in self._each("cancelled", None, message_ids):
            found |= set(ids or ())
        return found

    def attempt_ended(self, record: AttemptRecord) -> None:
        self._each("attempt_ended", record.message_id, record)

    def close(self, timeout: float) -> None:
        self._each("close", None, timeout)

    def watch(self, handler: Any, start: AttemptStart, members: Sequence[AttemptStart] = ()) -> None:
        """Tell the observers the attempt starts, and hook its handler's heartbeat ticks (and an operator's kill
        of it or of any other message of its batch, ``members``) to them. ``handler.killed`` maps each message
        id whose kill order the call obeyed to its ``then``. Nothing is hooked without observers."""
        if not self.observers:
            return
        self.attempt_started(start)
        task_running, beats = handler.running, iter(range(1, 1 << 62))
        handler.killed = {}

        def running() -> bool:  # on the heartbeat thread, once per beat
            self.heartbeat(start, time.time(), next(beats))
            self.heartbeat_lag(start, handler.heartbeat_lag())
            for each in (start, *members):  # one call for the whole batch: a kill of any of them stops it
                order = self.kill_order(each)
                if order is not None:
                    handler.killed[each.message_id] = order.then
                    if each is start:  # the others of a batch are only released (see batches.settle)
                        handler.kill_then = order.then
                    handler.kill(order.reason)
            return bool(task_running()) and self.keep_running(start)

        handler.running = running
