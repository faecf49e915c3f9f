"""What became of each attempt: the worker's log lines, its job log records and the dead-letter path.

One :class:`Outcomes` per worker process. Every message a worker receives ends
in exactly one of its methods, and each writes the log line(s) and the job
record of that attempt together, so the two always agree: a message that goes
down the dead-letter path gets one ``dead-lettered`` line and one job record
with the outcome ``dead-lettered``, at the attempt where it went; a message
that comes back after that (the redrive policy has not moved it yet) is only
``handed back``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ..backends import Message, QueueBackend
from ..consumer import reject
from ..lease import Lease, default_backoff, notify_context, receive_count
from ..outcomes import Action, Outcome
from .deadletter import DeadLetter
from .jobs import JobLog, record_from_handler, record_from_message
from .orders import finish_kill
from .retry import Retry
from .worklog import AttemptRecord, log_event

logger = logging.getLogger("sqsmaster.worker")


#: Longest task name a log line or a job record repeats from a message (a rejected one may carry any text).
MAX_SHOWN_TASK_NAME = 200


def shown_task(name: str | None) -> str | None:
    """A task name from a message, cut short for the log and the job log."""
    if name is None or len(name) <= MAX_SHOWN_TASK_NAME:
        return name
    return f"{name[:MAX_SHOWN_TASK_NAME]}... ({len(name):,} characters)"


def describe(error: BaseException | None) -> str | None:
    """``Type: message`` for the log and the job log."""
    return None if error is None else f"{type(error).__name__}: {error}"


class Outcomes:
    """Ends attempts: logs them, records them, and sends messages down the dead-letter path.

    :param dlq: the explicit dead-letter queue (``--dlq``), for queues without a redrive policy
    :param notify: ``notify(exception, context)`` for rejected messages (handlers call it for failures)
    :param on_attempt_end: called with each :class:`AttemptRecord`
    :param job_log: path of the JSON-lines job log, or None
    """

    def __init__(self, dlq: QueueBackend | None = None, notify: Callable[..., None] | None = None,
                 on_attempt_end: Callable[[AttemptRecord], None] | None = None, job_log: str | None = None) -> None:
        self.dlq = dlq
        self.notify = notify
        self.on_attempt_end = on_attempt_end
        self.job_log = JobLog(job_log) if job_log else None
        self.dead_letters: dict[str, DeadLetter] = {}

    def read_policies(self, queues: list[QueueBackend]) -> None:
        """Read each queue's redrive policy, and look at the explicit dead-letter queue: a missing queue (a
        mistyped ``--dlq`` included) shows now, not at the first dead letter. Raises QueueError."""
        for queue in queues:
            self.dead_letters[queue.url] = DeadLetter(queue, self.dlq)
        if self.dlq is not None:
            self.dlq.get_attributes()

    def dead_letter(self, message: Message) -> DeadLetter:
        """The dead-letter path of the message's queue."""
        url = message.queue.url
        if url not in self.dead_letters:
            self.dead_letters[url] = DeadLetter(message.queue, self.dlq)
        return self.dead_letters[url]

    def after_run(self, message: Message, handler: Any, name: str, attempt: int, started_at: float) -> None:
        """A handler's ``with`` block ended (it deleted the message, or handed it back with its backoff)."""
        dead_letter = self.dead_letter(message)
        outcome, runtime = handler.outcome or Outcome.FAILED, handler.runtime
        lost = handler.lease is not None and handler.lease.lost
        delay: int | None = None
        if outcome == Outcome.SUCCEEDED:
            log_event(Outcome.SUCCEEDED, message.message_id, name, attempt, runtime=runtime)
            action = Action.DELETED
        elif outcome == Outcome.KILLED:
            then = getattr(handler, "kill_then", None)
            action = Action.LEASE_LOST if lost else finish_kill(message, then, dead_letter)
            log_event(Outcome.KILLED, message.message_id, name, attempt, logging.WARNING, runtime=runtime,
                      reason=describe(handler.exception), then=then, action=action)
        else:
            if not isinstance(handler.exception, Retry):  # a Retry the task raised is not a failure to report
                log_event(outcome, message.message_id, name, attempt, logging.ERROR, runtime=runtime,
                          reason=describe(handler.exception))
            action, delay = self._after_failure(message, handler, name, attempt, dead_letter, lost)
        if lost:
            log_event(Outcome.LEASE_LOST, message.message_id, name, attempt, logging.ERROR, runtime=runtime)
        job = record_from_handler(handler, task=name, dead_lettered=outcome != Outcome.KILLED and action in (
            Action.DEAD_LETTERED, Action.HANDED_TO_REDRIVE))
        self.record(AttemptRecord(message.message_id, message.queue.url, name, attempt, outcome, action,
                                  started_at, runtime, describe(handler.exception), delay, job, lease_lost=lost))

    def _after_failure(self, message: Message, handler: Any, name: str, attempt: int, dead_letter: DeadLetter,
                       lost: bool) -> tuple[Action, int | None]:
        plan = handler.plan
        if lost:
            return Action.LEASE_LOST, None
        if plan is not None and not plan.retry:
            action = dead_letter.finish(message)
            self._log_end(message, name, attempt, action, dead_letter, plan.reason)
            return action, None
        delay = plan.delay if plan is not None else None
        if dead_letter.moves_after(attempt):
            # Handed back for a retry, but SQS moves it to the DLQ at its next receive: that is its end.
            reason = (f"attempt {attempt} reached the redrive policy's maxReceiveCount "
                      f"{dead_letter.max_receive_count}")
            self._log_end(message, name, attempt, Action.HANDED_TO_REDRIVE, dead_letter, reason)
            return Action.HANDED_TO_REDRIVE, delay
        log_event("retry scheduled", message.message_id, name, attempt, delay=delay)
        return Action.RETRY, delay

    def reject(self, message: Message, error: Exception, attempt: int) -> None:
        """A message that cannot run (malformed, unknown task, unreadable payload): report it and send
        it down the dead-letter path (for a redrive policy: handed back with a backoff)."""
        task = shown_task(getattr(error, "task", None))
        dead_letter = self.dead_letter(message)
        log_event(Outcome.REJECTED, message.message_id, task, attempt, logging.ERROR, reason=str(error))
        if dead_letter.mode == "redrive":
            reject(message, error, self.notify)
            action = Action.HANDED_TO_REDRIVE
            if dead_letter.moves_after(attempt):
                self._log_end(message, task, attempt, action, dead_letter, str(error))
        else:
            self._notify(message, error)
            action = dead_letter.hand_over(message)
            self._log_end(message, task, attempt, action, dead_letter, str(error))
        now = time.time()
        dead = action == Action.DEAD_LETTERED or (action == Action.HANDED_TO_REDRIVE
                                                  and dead_letter.moves_after(attempt))
        job = record_from_message(message, task=task, outcome=Outcome.DEAD_LETTERED if dead else Outcome.FAILED,
                                  started=now, ended=now, error=error)
        self.record(AttemptRecord(message.message_id, message.queue.url, task, attempt, Outcome.REJECTED, action,
                                  now, error=describe(error), job=job))

    def end_of_line(self, message: Message, name: str, attempt: int, reason: str) -> None:
        """A message back after its last retry: not run again, handed (again) to the dead-letter path."""
        dead_letter = self.dead_letter(message)
        action = dead_letter.hand_over(message)
        now = time.time()
        job = None
        if action == Action.HANDED_TO_REDRIVE:  # its dead-lettered line and record came with its last attempt
            log_event("handed back", message.message_id, name, attempt, logging.WARNING,
                      reason=f"{reason}; left for the queue's redrive policy")
        else:
            self._log_end(message, name, attempt, action, dead_letter, reason)
            if action == Action.DEAD_LETTERED:
                job = record_from_message(message, task=name, outcome=Outcome.DEAD_LETTERED, started=now,
                                          ended=now)
        self.record(AttemptRecord(message.message_id, message.queue.url, name, attempt, Outcome.NOT_RUN, action,
                                  now,
                                  job=job))

    def cancelled(self, message: Message) -> None:
        """An operator cancelled the message: delete it unrun, log and record it (outcome ``cancelled``)."""
        attempt = receive_count(message)
        action = Action.DELETED
        try:
            message.delete()
        except Exception as exc:
            logger.error("message %s: cancelled, but its delete failed (%s); it comes back and is cancelled "
                         "again", message.message_id, exc)
            action = Action.KEPT
        now = time.time()
        job = record_from_message(message, task=None, outcome=Outcome.CANCELLED, started=now, ended=now)
        job.task = shown_task(job.task)
        log_event(Outcome.CANCELLED, message.message_id, job.task, attempt, logging.WARNING,
                  reason="cancelled by an operator", action=action)
        self.record(AttemptRecord(message.message_id, message.queue.url, job.task, attempt, Outcome.CANCELLED,
                                  action, now, 0.0, job=job))

    def released(self, message: Message, handler: Any, name: str, attempt: int, started_at: float) -> None:
        """The task was stopped by the shutdown and its message released (visibility 0)."""
        log_event(Outcome.RELEASED, message.message_id, name, attempt, logging.WARNING,
                  reason="stopped by a second signal or the end of the grace period; visible again now")
        self.record(AttemptRecord(message.message_id, message.queue.url, name, attempt, Outcome.INTERRUPTED,
                                  Action.RELEASED, started_at, handler.runtime, describe(handler.exception),
                                  job=record_from_handler(handler, task=name)))

    def escaped(self, message: Message, name: str | None, attempt: int, error: BaseException) -> None:
        """Something escaped a handler, or the worker's own code for this message failed: the task's failure.

        The message is handed back with the default backoff (even if a handler already
        released it: a repeated hand-back is harmless). Never raises.
        """
        try:
            log_event(Outcome.FAILED, message.message_id, name, attempt, logging.ERROR,
                      reason=f"{describe(error)} (escaped to the worker loop; counted as this task's failure)")
            logger.error("message %s: traceback of the error the worker caught", message.message_id,
                         exc_info=(type(error), error, error.__traceback__))
            delay = default_backoff(attempt)
            Lease(message).release(delay)
            now = time.time()
            self.record(AttemptRecord(message.message_id, message.queue.url, name, attempt, Outcome.FAILED,
                                      Action.RETRY, now, error=describe(error), delay=delay,
                                      job=record_from_message(message, task=name, outcome=Outcome.FAILED, started=now,
                                                              ended=now, error=error)))
        except Exception:
            logger.exception("message %s: could not even record a failure", getattr(message, "message_id", None))

    def _notify(self, message: Message, error: Exception) -> None:
        if self.notify is None:
            return
        try:
            self.notify(error, context=notify_context(message))
        except Exception:
            logger.exception("message %s: notify() itself failed", message.message_id)

    def _log_end(self, message: Message, task: str | None, attempt: int, action: Action, dead_letter: DeadLetter,
                 reason: str) -> None:
        if action == Action.DEAD_LETTERED:
            assert dead_letter.dlq is not None
            log_event(Outcome.DEAD_LETTERED, message.message_id, task, attempt, logging.WARNING,
                      dlq=dead_letter.dlq.url, reason=reason)
        elif action == Action.HANDED_TO_REDRIVE:
            log_event(Outcome.DEAD_LETTERED, message.message_id, task, attempt, logging.WARNING,
                      reason=f"{reason}; handed back for the queue's redrive policy")
        else:
            log_event(Action.KEPT, message.message_id, task, attempt, logging.WARNING,
                      reason=f"{reason}; the queue has no redrive policy and no --dlq was given, so it stays "
                             "in the queue (hidden 15 minutes) for a later worker")

    def record(self, record: AttemptRecord) -> None:
        """Write the attempt's job record and pass it to ``on_attempt_end``; never raises."""
        if self.job_log is not None and record.job is not None:
            try:
                self.job_log.append(record.job)
            except OSError as exc:
                logger.error("message %s: could not write the job log %s: %s", record.message_id,
                             self.job_log.path, exc)
        if self.on_attempt_end is None:
            return
        try:
            self.on_attempt_end(record)
        except Exception:
            logger.exception("message %s: on_attempt_end failed", record.message_id)
