"""The scheduler: every worker with a job store sends its periodic tasks' due slots, once across the fleet.

There is no single scheduler process to keep alive (celery beat's weakness: two of them
send twice, none sends nothing). Every worker process that has a job store runs a
:class:`Scheduler` on a thread of its own (a pool: its first child only; see
:mod:`sqsmaster.worker.pool`), and each pass, for each slot due (:func:`due_slots`):

1. reads the schedule's latest fired slot (``store.fired``): already sent, nothing to do;
2. claims ``"{task}@{slot_iso}"`` in the store (a conditional write: one winner); a loser
   leaves it to the winner and looks again next pass;
3. the winner reads the fired slot again (another worker may have sent the slot and let go
   of its claim between 1 and 2), sends the task (message attribute ``schedule_slot`` =
   ``task@slot``; on a FIFO queue the same as its deduplication id), records the slot as
   fired (``store.mark_fired``: it only moves forward) and releases the claim.

A winner that dies between its claim and its send leaves a claim nobody releases: it
expires after ``claim_ttl`` seconds and the next worker to look sends the slot. One that
dies between its send and its record makes the slot go out twice once the claim expires:
on a FIFO queue the deduplication id drops the second copy (within SQS's 5 minutes, well
past ``claim_ttl``); on a standard queue the task runs twice, as SQS's at-least-once
delivery may make it do anyway. Slots are sent in order, and a pass stops at the first it
cannot settle, so the fired slot only ever moves forward.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from ..backends import QueueBackend, open_bounded_queue
from ..errors import ConfigurationError
from ..limits import MAX_FIFO_ID_LENGTH
from ..producer import build_entry, sender_attributes
from ..store import FiredRow, JobStore
from .registry import Registry, TaskSpec
from .schedules import Schedule, due_slots, slot_iso

logger = logging.getLogger(__name__)

#: The message attribute naming the slot a scheduled message was sent for: ``task@2026-12-02T03:00:00Z``.
SCHEDULE_ATTRIBUTE = "schedule_slot"
#: The ``service_name`` of scheduled messages.
SCHEDULER_SENDER = "sqsmaster scheduler"
#: How long a slot's claim lasts (s): a claim left by a worker that died before its send is taken over after
#: this. Far longer than one bounded send (:data:`SEND_TIMEOUT`), far shorter than FIFO's 5-minute deduplication.
CLAIM_TTL = 60.0
#: The owner of a schedule's first record, made before it ever fired: where its slots start.
BASELINE_OWNER = "(start)"
#: Longest wait for one send (s).
SEND_TIMEOUT = 10.0
#: Longest sleep between two passes (s): a slot is sent within about this long of its time.
TICK = 1.0

#: ``send(spec, slot) -> message id``.
Send = Callable[[TaskSpec, float], str]


def slot_key(name: str, slot: float) -> str:
    """The claim key and ``schedule_slot`` attribute of one slot of task ``name``."""
    return f"{name}@{slot_iso(slot)}"


def scheduler_owner() -> str:
    """An owner id for this process's scheduler: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """Sends the due slots of ``specs`` (tasks with a ``schedule``) through ``send``; :meth:`run_pass` does one pass.

    ``clock`` gives wall-clock seconds (slots are wall-clock instants); tests pass a simulated one.
    Store and queue errors are logged and the slot is tried again next pass; anything else
    (a BaseException) propagates.
    """

    def __init__(self, specs: list[TaskSpec], store: JobStore, send: Send, owner: str, *,
                 clock: Callable[[], float] = time.time, claim_ttl: float = CLAIM_TTL) -> None:
        self.specs = [spec for spec in specs if spec.schedule is not None]
        self.store = store
        self.send = send
        self.owner = owner
        self.clock = clock
        self.claim_ttl = claim_ttl
        self._known: dict[str, float] = {}  # task -> a slot known to be sent (saves a store read per pass)
        self._unrecorded: dict[str, float] = {}  # task -> a slot we sent whose record the store has not taken yet
        self._failing: set[str] = set()

    def run_pass(self) -> int:
        """Send what is due now; returns how many slots this scheduler sent."""
        sent = 0
        for spec in self.specs:
            try:
                sent += self._schedule_pass(spec)
            except Exception as exc:  # the store or the queue: the slot waits for the next pass
                if spec.name not in self._failing:
                    self._failing.add(spec.name)
                    logger.warning("schedule of %s: %s; trying again every %.0fs", spec.name, exc, TICK)
                continue
            if spec.name in self._failing:
                self._failing.discard(spec.name)
                logger.info("schedule of %s: working again", spec.name)
        return sent

    def _schedule_pass(self, spec: TaskSpec) -> int:
        now = self.clock()
        schedule = scheduled(spec)
        newest = schedule.previous(now)
        if newest is None or self._known.get(spec.name, -1.0) >= newest:
            return 0
        self._record(spec.name)  # a slot we sent while the store failed: recorded first (or this pass stops here)
        fired = self.store.fired(spec.name) or self._baseline(spec.name, schedule, newest, now)
        slots = due_slots(schedule, fired.slot, now)
        if not slots:  # sent already, or every missed slot is past max_lateness
            self._known[spec.name] = newest
            return 0
        sent = 0
        for slot in slots:
            settled, ours = self._fire(spec, slot)
            if not settled:
                break  # another worker holds it: in order, so look again next pass
            sent += ours
        else:
            self._known[spec.name] = newest
        return sent

    def _baseline(self, name: str, schedule: Schedule, newest: float, now: float) -> FiredRow:
        """Where a schedule that never fired starts, recorded (so a winner that dies on the first slot leaves it
        to the others, however late they look): just before its newest slot if that is recent enough to send
        (see :func:`due_slots`), else at it (the next slot is the first)."""
        start = newest - 1 if due_slots(schedule, None, now) else newest
        self.store.mark_fired(FiredRow(name, start, now, BASELINE_OWNER))
        return self.store.fired(name) or FiredRow(name, start, now, BASELINE_OWNER)

    def _fire(self, spec: TaskSpec, slot: float) -> tuple[bool, bool]:
        """``(settled, sent by us)`` for one slot: claim it, then send it unless someone already did."""
        key = slot_key(spec.name, slot)
        if not self.store.claim(key, self.owner, self.clock(), self.claim_ttl):
            logger.debug("schedule of %s: slot %s is claimed by %s", spec.name, key,
                         self.store.holder(key, self.clock()))
            return False, False
        try:
            fired = self.store.fired(spec.name)
            if fired is not None and fired.slot >= slot:
                self._let_go(key)
                return True, False  # sent by a worker that let go of its claim after our first look
            message_id = self.send(spec, slot)
        except Exception:
            self._let_go(key)  # not sent: another worker (or our next pass) may send it at once
            raise
        logger.info("message %s: scheduled task %s sent for slot %s", message_id, spec.name, slot_iso(slot))
        # Sent: until the store records it, our claim stays (nobody sends it again for claim_ttl) and we retry
        # the record at each pass before anything else.
        self._unrecorded[spec.name] = slot
        self._record(spec.name)
        return True, True

    def _record(self, name: str) -> None:
        """Record the slot of ``name`` we sent and could not record yet, then let go of its claim; raises
        the store's error while it fails."""
        slot = self._unrecorded.get(name)
        if slot is None:
            return
        self.store.mark_fired(FiredRow(name, slot, self.clock(), self.owner))
        del self._unrecorded[name]
        self._let_go(slot_key(name, slot))

    def _let_go(self, key: str) -> None:
        try:
            self.store.release(key, self.owner)
        except Exception as exc:  # it expires after claim_ttl
            logger.debug("schedule claim %s not released (%s); it expires by itself", key, exc)


class QueueSender:
    """Sends a scheduled task's message: no kwargs, ``schedule_slot`` = ``task@slot``, to the schedule's
    queue or ``default_url``; FIFO queues: group = the task name, deduplication id = ``task@slot``."""

    def __init__(self, default_url: str, queue_constructor: Callable[[str], Any] | None = None) -> None:
        self.default_url = default_url
        self.queue_constructor = queue_constructor
        self._queues: dict[str, tuple[QueueBackend, Any]] = {}

    def __call__(self, spec: TaskSpec, slot: float) -> str:
        url = scheduled(spec).queue or self.default_url
        if url not in self._queues:
            self._queues[url] = open_bounded_queue(url, SEND_TIMEOUT, self.queue_constructor)
        queue = self._queues[url][0]
        key = slot_key(spec.name, slot)
        attributes = {**sender_attributes(SCHEDULER_SENDER, url),
                      SCHEDULE_ATTRIBUTE: {"DataType": "String", "StringValue": key}}
        fifo = bool(getattr(queue, "fifo", False))
        entry = build_entry(spec.name, {}, attributes, group_id=fifo_id(spec.name) if fifo else None,
                            deduplication_id=fifo_id(key) if fifo else None)
        return str(queue.send(entry)["MessageId"])

    def close(self) -> None:
        for _, client in self._queues.values():
            if client is not None:
                client.close()


def scheduled(spec: TaskSpec) -> Schedule:
    """The schedule of a periodic task (ConfigurationError for a task without one)."""
    if spec.schedule is None:
        raise ConfigurationError(f"task {spec.name!r} has no schedule")
    return spec.schedule


def fifo_id(text: str) -> str:
    """``text`` as a FIFO group or deduplication id: itself when SQS takes it, else its SHA-256 (a task name
    may hold spaces or be long)."""
    if 1 <= len(text) <= MAX_FIFO_ID_LENGTH and all(33 <= ord(c) <= 126 for c in text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()


class SchedulerThread:
    """Runs a :class:`Scheduler` pass every :data:`TICK` seconds on a daemon thread until :meth:`close`."""

    def __init__(self, scheduler: Scheduler, on_close: Callable[[], None] | None = None, tick: float = TICK) -> None:
        self.scheduler = scheduler
        self._on_close = on_close
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqsmaster-scheduler", daemon=True)

    def start(self) -> "SchedulerThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scheduler.run_pass()
            except Exception:
                logger.exception("scheduler pass failed")
            self._stop.wait(self._tick)

    def close(self, timeout: float) -> None:
        """Stop after the pass under way (a send is bounded by :data:`SEND_TIMEOUT`), waiting at most ``timeout``."""
        self._stop.set()
        self._thread.join(timeout)
        if self._on_close is not None and not self._thread.is_alive():
            self._on_close()


def start_scheduler(registry: Registry, store: JobStore | None, default_url: str,
                    queue_constructor: Callable[[str], Any] | None = None) -> SchedulerThread | None:
    """The scheduler thread of one worker process, started; None when no task has a schedule or there is no
    store (then the scheduled tasks only run when something else sends them: say so)."""
    specs = [registry.get(name) for name in registry.names() if registry.get(name).schedule is not None]
    if not specs:
        return None
    if store is None:
        logger.warning("tasks %s have a schedule, but this worker has no job store (--store): this worker does "
                       "not send them", ", ".join(spec.name for spec in specs))
        return None
    sender = QueueSender(default_url, queue_constructor)
    scheduler = Scheduler(specs, store, sender, scheduler_owner())
    logger.info("scheduler started for %s", ", ".join(f"{s.name} ({scheduled(s).describe()})" for s in specs))
    return SchedulerThread(scheduler, on_close=sender.close).start()
