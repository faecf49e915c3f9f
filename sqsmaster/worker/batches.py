"""Batch tasks (``@task(batch=25)``): many messages of one task, one call with the list of their kwargs.

When the worker takes a message of a batch task, it gathers more of that task: first from the
messages it already holds (prefetched), then by receiving again, for up to the task's
``batch_wait`` seconds (default :data:`~sqsmaster.worker.registry.DEFAULT_BATCH_WAIT`, 1 s) and
only while receives bring messages (an empty one ends the gathering: the queue has no more now), and
never for more than half the worker's visibility timeout (the gathered messages are not heartbeated
until the call starts).
Messages of other tasks received meanwhile wait their turn, their leases heartbeated as prefetched
ones are. The first message's handler runs the call under the task's supervision (hard timeout,
isolation, retries); every other message of the batch has its lease extended by a heartbeat thread
of its own (ten to a ChangeMessageVisibilityBatch call) while the call runs. Then:

- success: every message is deleted (DeleteMessageBatch, through the worker's delete batcher);
- failure (an exception, a hard timeout, a crash): each message goes where a failure of its own
  would send it, by its own receive count: handed back with its backoff for a retry, or down the
  dead-letter path after its last attempt;
- a shutdown that stops the call: every message is released (visible again at once).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol, Sequence

from ..backends import Message
from ..consumer import read_message
from ..errors import MalformedMessage, QueueError, UnknownTask
from ..lease import Lease, receive_count
from ..ordering import GroupOrder
from ..outcomes import Action, Outcome
from ..payloads import PayloadStore
from ..prefetch import PendingLeases
from .attempts import Outcomes, describe
from .config import WorkerConfig
from .deletes import DeleteBatcher
from .events import AttemptStart, Observers
from .jobs import record_from_message, submitted_at
from .orders import drop_cancelled, finish_kill
from .receiving import Receiver
from .registry import TaskSpec
from .signals import ShutdownSignals, block_stop_signals
from .worklog import AttemptRecord, log_event


class BatchLoop(Protocol):
    """What a batch uses of the worker loop that runs it (:class:`~sqsmaster.worker.loop.WorkerLoop`)."""

    config: WorkerConfig
    ended: int
    events: Observers
    outcomes: Outcomes
    pending: PendingLeases
    receiver: Receiver
    signals: ShutdownSignals
    order: GroupOrder
    deletes: DeleteBatcher

    def payloads(self, message: Message) -> PayloadStore: ...

    def run_task(self, message: Message, spec: TaskSpec, name: str, kwargs: dict[str, Any], attempt: int,
                 batch: list[dict[str, Any]] | None = None, members: Sequence[AttemptStart] = ()) -> Any: ...

logger = logging.getLogger("sqsmaster.worker")

#: One member of a batch: the message, its decoded kwargs and its attempt number.
Member = tuple[Message, dict[str, Any], int]


def run_batch(loop: BatchLoop, message: Message, spec: TaskSpec, name: str, kwargs: dict[str, Any], attempt: int,
              timeouts: tuple[float, float, float]) -> str | None:
    """Gather up to ``spec.batch`` messages of the task (``message`` first; fewer if ``--max-tasks`` leaves
    fewer), run one call, settle them all; returns the call's outcome (None when a stop signal came while it
    gathered: then none ran, all are back with the loop's unstarted messages, released as they are). Raises
    what the loop's ``run_task`` raises (WorkerShutdown), the other messages released."""
    assert spec.batch is not None
    limit = loop.config.max_tasks
    size = spec.batch if limit is None else max(1, min(spec.batch, limit - loop.ended))
    members = gather(loop, spec, name, size)
    if loop.signals.stopping:  # stopped while gathering: no call starts, every message is released unrun
        loop.pending.add([message, *(member for member, _, _ in members)])
        return None
    leases = BatchLeases(members, timeouts[0], timeouts[1])
    started_at = time.time()
    batch = [kwargs] + [member_kwargs for _, member_kwargs, _ in members]
    log_event("batch", message.message_id, name, attempt, size=len(batch))
    starts = _announce(loop, spec, members, name, started_at, timeouts)
    try:
        handler = loop.run_task(message, spec, name, kwargs, attempt, batch=batch, members=starts)
    except BaseException:
        leases.release()
        raise
    leases.stop()
    settle(loop, handler, members, name, started_at)
    loop.ended += len(members)
    return handler.outcome


def _announce(loop: BatchLoop, spec: TaskSpec, members: list[Member], name: str, started_at: float,
              timeouts: tuple[float, float, float]) -> list[AttemptStart]:
    """Tell the worker's observers each other message's attempt starts (the first one's is told by the loop);
    returns those attempts (their kill orders stop the call too)."""
    if not loop.events.observers:
        return []
    isolation = spec.isolation or loop.config.isolation
    starts = [AttemptStart(message.message_id, message.queue.url, name, attempt, kwargs, started_at,
                           started_at + timeouts[2], timeouts[0], isolation, submitted_at(message))
              for message, kwargs, attempt in members]
    for start in starts:
        loop.events.attempt_started(start)
    return starts


def gather(loop: BatchLoop, spec: TaskSpec, name: str, size: int, clock: Any = time.monotonic) -> list[Member]:
    """Up to ``size - 1`` more ready messages of task ``name`` (see the module's docstring)."""
    members: list[Member] = []
    others: list[Message] = []
    held = []
    while (message := loop.pending.pop()) is not None:
        held.append(message)
    if held and loop.events.observers:  # cancels ordered while they waited their turn here
        held = drop_cancelled(held, loop.events, loop.outcomes)
    # The first message (and each gathered one) waits unheartbeated until the call starts: never past half
    # of the visibility its receive gave it.
    deadline = clock() + min(spec.batch_wait, loop.receiver.visibility_timeout / 2)
    while len(members) + 1 < size and not loop.signals.stopping:
        if not held:
            if clock() >= deadline or loop.receiver.idle:
                break
            held = loop.receiver.receive(size - 1 - len(members))
            for message in held:
                log_event("received", message.message_id, attempt=receive_count(message), queue=message.queue.url)
            if held and loop.events.observers:  # an operator's cancels, as for the loop's own receives
                held = drop_cancelled(held, loop.events, loop.outcomes)
            if not held:
                break
        message = held.pop(0)
        member = _member(loop, message, name)
        if member is None:
            others.append(message)
        elif member[0] is not None:
            members.append((message, member[0], member[1]))
    loop.pending.add(held + others)  # not for this batch: run after it, heartbeated meanwhile
    return members


def _member(loop: BatchLoop, message: Message, name: str) -> tuple[dict[str, Any] | None, int] | None:
    """``(kwargs, attempt)`` for a message of task ``name``; kwargs None when the message was dealt with
    here (not due yet, or held back behind its FIFO group); None for a message the loop must take."""
    attempt = receive_count(message)
    try:
        prepared = read_message(message, loop.payloads(message), loop.outcomes.dead_letter(message).max_receive_count)
    except (MalformedMessage, UnknownTask, QueueError):
        return None  # the loop rejects it, as it would have
    if prepared is None:
        return None, attempt  # not due yet: already handed back until it is
    task, kwargs = prepared
    if task != name:
        return None
    if not loop.order.admit(message):
        return None, attempt
    return kwargs, attempt


class BatchLeases:
    """Keeps the other messages of a running batch hidden: a heartbeat thread, as for prefetched messages."""

    def __init__(self, members: list[Member], visibility_timeout: float, period: float) -> None:
        self._leases = PendingLeases(int(visibility_timeout), period, thread_setup=block_stop_signals)
        self._leases.add([message for message, _, _ in members])

    def stop(self) -> None:
        """Stop extending (the call ended): the messages are the caller's to delete or hand back."""
        while self._leases.pop() is not None:
            pass
        self._leases.close()

    def release(self) -> None:
        """Release what is still held (the call was stopped): visible again at once."""
        self._leases.close()


def settle(loop: BatchLoop, handler: Any, members: list[Member], name: str, started_at: float) -> None:
    """After the first message's handler ended: delete every other message, or hand each back as its own
    failure would (its backoff, or the dead-letter path after its last attempt)."""
    succeeded = handler.outcome == Outcome.SUCCEEDED
    for message, _, attempt in members:
        try:
            if succeeded:
                action, delay = _delete(loop, message), None
            elif handler.outcome == Outcome.KILLED:
                action, delay = _after_kill(loop, handler, message), None
            else:
                action, delay = _hand_back(loop, handler, message, attempt)
            outcome = Outcome.SUCCEEDED if succeeded else handler.outcome or Outcome.FAILED
            log_event(outcome, message.message_id, name, attempt, logging.INFO if succeeded else logging.ERROR,
                      runtime=handler.runtime, batch_of=handler.message_id, action=str(action), delay=delay)
            job = record_from_message(message, task=name, outcome=str(outcome), started=started_at,
                                      error=None if succeeded else handler.exception)
            loop.outcomes.record(AttemptRecord(message.message_id, message.queue.url, name, attempt, outcome,
                                               action, started_at, handler.runtime, describe(handler.exception),
                                               delay, job))
        except Exception as exc:
            loop.outcomes.escaped(message, name, attempt, exc)


def _delete(loop: BatchLoop, message: Message) -> Action:
    loop.deletes.add(message)
    loop.order.settle(message, succeeded=True)
    return Action.DELETED


def _after_kill(loop: BatchLoop, handler: Any, message: Message) -> Action:
    """A killed call: a message the operator ordered killed goes where its order says; the others of the
    batch were not ordered, so they are visible again at once, to run in another call."""
    loop.order.settle(message, succeeded=False)
    killed: dict[str, str | None] = getattr(handler, "killed", {})
    if message.message_id in killed:
        return finish_kill(message, killed[message.message_id], loop.outcomes.dead_letter(message))
    Lease(message).release(0)
    return Action.RELEASED


def _hand_back(loop: BatchLoop, handler: Any, message: Message, attempt: int) -> tuple[Action, int | None]:
    loop.order.settle(message, succeeded=False)
    dead_letter = loop.outcomes.dead_letter(message)
    delay = handler.backoff(attempt)  # this message's own receive count decides its retry, as for a single one
    if handler.plan is not None and not handler.plan.retry:
        return dead_letter.hand_over(message), None
    Lease(message).release(delay)
    if dead_letter.moves_after(attempt):
        return Action.HANDED_TO_REDRIVE, delay
    return Action.RETRY, delay
