"""``Worker``: the consumer loop users no longer write. Receive, run each registered task, retry, dead-letter.

One worker process runs one task at a time in its main thread, so signal
isolation works; ``concurrency=N`` forks N such processes (see
:mod:`sqsmaster.pool`). The flow of one message::

    receive ─▶ decode ─▶ registry ─▶ MessageHandler (heartbeat, hard timeout) ─▶ delete
                  │          │                 └─ failure ─▶ retry policy ─▶ visibility = delay
                  └──────────┴─ malformed / unknown / past the last retry ─▶ dead-letter path

SIGTERM or SIGINT stops receiving at once; received-but-unstarted messages are
released with visibility 0; a running task gets ``grace`` seconds (its
heartbeats continue), then it is stopped and released. A second signal
releases everything now. ``run()`` returns the exit code: 0, or 3 when a queue
does not exist.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from .acks import DEFAULT_MAX_DELAY, DeleteBatcher
from .alarms import ShutdownSignals, WorkerShutdown
from .backends import Message, QueueBackend, open_queue
from .consumer import reject
from .deadletter import DeadLetter
from .delays import hold_if_not_due
from .encoding import decode_task
from .errors import ConfigurationError, MalformedMessage, QueueDoesNotExist, QueueError, UnknownTask
from .jobs import JobLog, record_from_handler, record_from_message
from .lease import receive_count
from .limits import MAX_RECEIVE_MESSAGES, check_range, check_visibility_timeout, check_wait_time
from .ordering import GroupOrder
from .payloads import resolve_payload
from .receiver import PendingLeases, Receiver, unreachable_backoff
from .registry import Registry, TaskSpec, WorkerHandler, load_tasks
from .retry import Retry
from .supervise import DEFAULT_HARD_TIMEOUT
from .worklog import AttemptRecord, log_event

logger = logging.getLogger("sqsmaster.worker")

EXIT_OK = 0
EXIT_QUEUE = 3


@dataclass
class WorkerConfig:
    """Everything a worker process needs; picklable except ``tasks`` given as an object."""

    queues: list[str]
    tasks: Any
    concurrency: int = 1
    isolation: str = "signal"
    sqs_timeout: float = 30
    alarm_timeout: float | None = None
    hard_timeout: float = DEFAULT_HARD_TIMEOUT
    wait_time: float = 20
    max_tasks: int | None = None
    until_empty: bool = False
    prefetch: int = 0
    grace: float = 30
    dlq: str | None = None
    notify: Callable[..., None] | None = None
    on_attempt_end: Callable[[AttemptRecord], None] | None = None
    queue_constructor: Callable[[str], Any] | None = None
    job_log: str | None = None


class Worker:
    """Run registered tasks from one or more queues until stopped.

    :param queue: the queue URL (or a list of URLs, highest priority first)
    :param tasks: a :class:`~sqsmaster.registry.Registry`, a module, or a module name
    :param concurrency: tasks at once, each in its own process
    :param isolation: default isolation for tasks that do not set one ("signal" or "process")
    :param sqs_timeout: visibility held on a message while its task runs (s)
    :param alarm_timeout: heartbeat period (s); default ``sqs_timeout / 3``
    :param hard_timeout: default hard timeout of a task (s)
    :param wait_time: longest receive wait (s, ≤ 20); polls are sliced to 1 s so signals are noticed
    :param max_tasks: exit after this many tasks ended, whatever their outcome
    :param until_empty: exit once a receive is empty, no task of ours runs and every queue
        reports no visible, in-flight or delayed message
    :param prefetch: messages held beyond the running one (heartbeated until they start)
    :param grace: seconds a running task may finish after SIGTERM/SIGINT
    :param dlq: an explicit dead-letter queue URL, for queues with no redrive policy
    :param queues: more queues after ``queue``, in priority order
    :param notify: ``notify(exception, context)`` for failures and rejected messages
    :param on_attempt_end: called with an :class:`~sqsmaster.worklog.AttemptRecord` after each attempt
        (in the worker process that ran it)
    :param job_log: append one :class:`~sqsmaster.jobs.JobRecord` per attempt to this JSON-lines
        file (shared by the ``concurrency`` processes; ``sqsmaster report`` reads it)
    :raises ConfigurationError: for settings that cannot work, before anything is received
    """

    def __init__(self, queue: str | list[str], tasks: Any, *, concurrency: int = 1, isolation: str = "signal",
                 sqs_timeout: float = 30, alarm_timeout: float | None = None,
                 hard_timeout: float = DEFAULT_HARD_TIMEOUT, wait_time: float = 20, max_tasks: int | None = None,
                 until_empty: bool = False, prefetch: int = 0, grace: float = 30, dlq: str | None = None,
                 queues: list[str] | None = None, notify: Callable[..., None] | None = None,
                 on_attempt_end: Callable[[AttemptRecord], None] | None = None,
                 queue_constructor: Callable[[str], Any] | None = None, job_log: str | None = None) -> None:
        urls = ([queue] if isinstance(queue, str) else list(queue)) + list(queues or [])
        if not urls:
            raise ConfigurationError("a worker needs at least one queue URL")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch < MAX_RECEIVE_MESSAGES:
            raise ConfigurationError(f"prefetch must be an int in [0, {MAX_RECEIVE_MESSAGES - 1}], not {prefetch!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ConfigurationError(f"max_tasks must be an int >= 1, not {max_tasks!r}")
        check_visibility_timeout("sqs_timeout", sqs_timeout)
        check_wait_time(wait_time)
        check_range("grace", grace, 0, float("inf"))
        alarm = alarm_timeout if alarm_timeout is not None else max(sqs_timeout / 3, 0.5)
        self.registry: Registry = load_tasks(tasks)
        self.config = WorkerConfig(urls, self.registry, concurrency, isolation, sqs_timeout, alarm, hard_timeout,
                                   wait_time, max_tasks, until_empty, prefetch, grace, dlq, notify,
                                   on_attempt_end, queue_constructor, None if job_log is None else str(job_log))
        # Fail on a bad isolation or timeouts here, not at the first message.
        for spec in (self.registry.get(name) for name in self.registry.names()):
            sqs, alarm_, hard = _timeouts(self.config, spec)
            spec.handler_class(isolation)(_Probe(), sqs_timeout=sqs, alarm_timeout=alarm_, hard_timeout=hard)

    def run(self) -> int:
        """Work until stopped, ``max_tasks`` or ``until_empty``; returns the exit code (0, or 3)."""
        if self.config.concurrency > 1:
            from .pool import run_pool

            return run_pool(self.config)
        with ShutdownSignals(grace=self.config.grace) as signals:
            return WorkerLoop(self.config, signals).run()


class _Probe:
    """A stand-in message to validate handler settings at construction time."""

    message_id = None
    attributes: dict[str, str] = {}


def _timeouts(config: WorkerConfig, spec: TaskSpec | None) -> tuple[float, float, float]:
    """``(sqs_timeout, alarm_timeout, hard_timeout)`` for a task: its own, else the worker's.

    A task that sets its own ``sqs_timeout`` but no ``alarm_timeout`` heartbeats every third of it.
    """
    own_sqs = spec.sqs_timeout if spec is not None else None
    own_alarm = spec.alarm_timeout if spec is not None else None
    own_hard = spec.hard_timeout if spec is not None else None
    sqs_timeout = float(own_sqs or config.sqs_timeout)
    alarm_timeout = float(own_alarm or (config.alarm_timeout if own_sqs is None else None) or max(sqs_timeout / 3, 0.5))
    return sqs_timeout, alarm_timeout, float(own_hard or config.hard_timeout)


class WorkerLoop:
    """One worker process's loop: one task at a time, in the main thread.

    ``claim`` (used by a pool) returns False when the shared ``max_tasks`` budget is spent;
    ``parent`` (a pool child's parent pid) makes the loop stop if that parent dies.
    """

    def __init__(self, config: WorkerConfig, signals: ShutdownSignals,
                 claim: Callable[[], bool] | None = None, parent: int | None = None) -> None:
        self.config = config
        self.signals = signals
        self.registry = load_tasks(config.tasks)
        self._claim = claim
        self.ended = 0
        self.queues: list[QueueBackend] = [open_queue(url, queue_constructor=config.queue_constructor)
                                           for url in config.queues]
        dlq = open_queue(config.dlq, queue_constructor=config.queue_constructor) if config.dlq else None
        self._dead_letters: dict[str, DeadLetter] = {}
        self._dlq = dlq
        self.receiver = Receiver(self.queues, wait_time=config.wait_time,
                                 visibility_timeout=int(config.sqs_timeout), should_stop=lambda: signals.stopping)
        self.pending = PendingLeases(int(config.sqs_timeout), float(config.alarm_timeout or 1),
                                     should_release=lambda: signals.stopping)
        self._parent = parent
        self.job_log = JobLog(config.job_log) if config.job_log else None
        self.order = GroupOrder()
        # Succeeded messages are deleted ten at a time, well inside their visibility timeout.
        self.deletes = DeleteBatcher(max_delay=min(DEFAULT_MAX_DELAY, float(config.sqs_timeout) / 4))

    def dead_letter(self, message: Message) -> DeadLetter:
        url = message.queue.url
        if url not in self._dead_letters:
            self._dead_letters[url] = DeadLetter(message.queue, self._dlq)
        return self._dead_letters[url]

    def run(self) -> int:
        try:
            if not self._prepare():
                return EXIT_OK
            logger.info("worker ready (pid %d): queues %s, tasks %s, dead letters %s", os.getpid(),
                        ", ".join(self.config.queues), ", ".join(self.registry.names()),
                        ", ".join(f"{d.mode}" for d in self._dead_letters.values()))
            while not self._should_stop():
                message = self.pending.pop() or self._receive()
                if message is None:
                    if self.config.until_empty and not len(self.pending) and self.receiver.all_empty():
                        logger.info("every queue is empty: stopping (--until-empty)")
                        break
                    continue
                if self.signals.stopping:  # the signal came between the check and now: do not start it
                    self.pending.add([message])
                    break
                if not self.process(message):
                    break
        except QueueDoesNotExist as exc:
            logger.error("%s; stopping", exc)
            return EXIT_QUEUE
        except WorkerShutdown:
            pass
        finally:
            self.deletes.close()
            released = self.pending.release_all()
            self.pending.close()
            self.receiver.close()
            if self.signals.stopping:
                logger.info("stopped after a signal: %d task(s) ended, %d unstarted message(s) released",
                            self.ended, released)
        return EXIT_OK

    def _prepare(self) -> bool:
        """Read each queue's redrive policy: a missing queue shows now, not at the first failure.

        An unreachable endpoint is waited for with the receiver's backoff; False if stopped meanwhile.
        """
        failures = 0
        while not self.signals.stopping:
            try:
                for queue in self.queues:
                    self._dead_letters[queue.url] = DeadLetter(queue, self._dlq)
                return True
            except QueueDoesNotExist:
                raise
            except QueueError as exc:
                if self.signals.stopping:
                    break
                failures += 1
                delay = unreachable_backoff(failures)
                logger.warning("queue unreachable at start (%s); retrying in %.0fs", exc, delay)
                self.receiver.pause(delay)
        return False

    def _should_stop(self) -> bool:
        if self.signals.stopping:
            return True
        if self.config.max_tasks is not None and self._claim is None and self.ended >= self.config.max_tasks:
            logger.info("%d task(s) ended: stopping (--max-tasks)", self.ended)
            return True
        if self._parent is not None and os.getppid() != self._parent:
            logger.warning("the parent process is gone: stopping")
            return True
        return False

    def _take_slot(self) -> bool:
        return self._claim() if self._claim is not None else True

    def _receive(self) -> Message | None:
        want = 1 + self.config.prefetch
        if self.config.max_tasks is not None:
            want = max(1, min(want, self.config.max_tasks - self.ended))
        messages = self.receiver.receive(want)
        for message in messages:
            log_event("received", message.message_id, attempt=receive_count(message), queue=message.queue.url)
        if self.signals.stopping and messages:
            self.pending.add(messages)
            return None
        if not messages:
            return None
        self.order = GroupOrder()  # FIFO: a failure holds back the rest of its group from this receive
        self.pending.add(messages[1:])
        return messages[0]

    def process(self, message: Message) -> bool:
        """Run one message's task (or reject it); never raises for a task's failure.

        Returns False when the pool's ``max_tasks`` budget is spent (the message is then released).
        """
        attempt = receive_count(message)
        if hold_if_not_due(message) or not self.order.admit(message):
            return True  # handed back: due later (eta/countdown), or behind a failed message of its FIFO group
        try:
            resolve_payload(message, None)
            name, kwargs = decode_task(message.body, message.message_id)
            spec = self.registry.get(name, message.message_id)
        except (MalformedMessage, UnknownTask, QueueError) as exc:
            self.order.settle(message, succeeded=False)
            self._reject(message, exc, attempt)
            return True
        if spec.retry is not None and spec.retry.exhausted(attempt - 1):
            # It came back after its last attempt (handed to the redrive policy, or a crash): no more runs.
            self._end_of_line(message, name, attempt, "past its last retry", started_at=time.time())
            return True
        if not self._take_slot():
            self.pending.add([message])
            return False
        try:
            outcome = self._run(message, spec, name, kwargs, attempt)
            self.order.settle(message, succeeded=outcome == "succeeded")
        except WorkerShutdown:
            log_event("released", message.message_id, name, attempt, logging.WARNING,
                      reason="stopped by a second signal or the end of the grace period; visible again now")
            raise
        finally:
            self.ended += 1
        return True

    def _run(self, message: Message, spec: TaskSpec, name: str, kwargs: dict[str, Any], attempt: int) -> str | None:
        """Run the task under its handler; returns the handler's outcome."""
        dead_letter = self.dead_letter(message)
        sqs_timeout, alarm_timeout, hard_timeout = _timeouts(self.config, spec)
        handler = spec.handler_class(self.config.isolation)(
            message, sqs_timeout=sqs_timeout, alarm_timeout=alarm_timeout, hard_timeout=hard_timeout)
        handler.kwargs = kwargs  # set afterwards: a task kwarg may be called "message" or "sqs_timeout"
        handler.dead_letter_visibility = dead_letter.visibility
        handler.deletes = self.deletes
        if self.config.notify is not None:
            handler.notify = self.config.notify  # type: ignore[method-assign]
        started_at = time.time()
        log_event("started", message.message_id, name, attempt, isolation=handler.isolation)
        try:
            with handler:
                self.signals.interruptible = True
                try:
                    handler.run()
                finally:
                    self.signals.interruptible = False
        except WorkerShutdown:  # the handler released the message (visibility 0)
            self._record(AttemptRecord(message.message_id, message.queue.url, name, attempt, "interrupted",
                                       "released", started_at, handler.runtime, _describe(handler.exception),
                                       job=record_from_handler(handler, task=name)))
            raise
        self._after(message, handler, name, attempt, dead_letter, started_at)
        return handler.outcome

    def _after(self, message: Message, handler: WorkerHandler, name: str, attempt: int,
               dead_letter: DeadLetter, started_at: float) -> None:
        outcome, runtime = handler.outcome or "failed", handler.runtime
        lost = handler.lease is not None and handler.lease.lost
        if outcome == "succeeded":
            log_event("succeeded", message.message_id, name, attempt, runtime=runtime)
            action, delay = "deleted", None
        else:
            error = handler.exception
            if not isinstance(error, Retry):  # a Retry the task raised is not a failure to report
                log_event(outcome, message.message_id, name, attempt, logging.ERROR, runtime=runtime,
                          reason=_describe(error))
            plan = handler.plan
            if lost:
                action, delay = "lease lost", None
            elif plan is not None and not plan.retry:
                action, delay = dead_letter.finish(message), None
                self._log_end(message, name, attempt, action, dead_letter, plan.reason)
            else:
                delay = plan.delay if plan is not None else None
                action = "retry"
                log_event("retry scheduled", message.message_id, name, attempt, delay=delay)
        if lost:
            log_event("lease lost", message.message_id, name, attempt, logging.ERROR, runtime=runtime)
        job = record_from_handler(handler, task=name, max_receive_count=dead_letter.max_receive_count,
                                  dead_lettered=action in ("dead-lettered", "handed to redrive"))
        self._record(AttemptRecord(message.message_id, message.queue.url, name, attempt, outcome, action,
                                   started_at, runtime, _describe(handler.exception), delay, job))

    def _reject(self, message: Message, error: Exception, attempt: int) -> None:
        task = getattr(error, "task", None)
        dead_letter = self.dead_letter(message)
        log_event("rejected", message.message_id, task, attempt, logging.ERROR, reason=str(error))
        if dead_letter.mode == "redrive":
            reject(message, error, self.config.notify)  # hands it back with a backoff; SQS moves it
            action = "handed to redrive"
        else:
            if self.config.notify is not None:
                try:
                    self.config.notify(error, {"body": message.body, "message_id": message.message_id})
                except Exception:
                    logger.exception("message %s: notify() itself failed", message.message_id)
            action = dead_letter.hand_over(message)
            self._log_end(message, task, attempt, action, dead_letter, str(error))
        now = time.time()
        dead = action == "dead-lettered" or bool(dead_letter.max_receive_count
                                                   and attempt >= dead_letter.max_receive_count)
        job = record_from_message(message, task=task, outcome="dead-lettered" if dead else "failed", started=now,
                                  ended=now, error=error)
        self._record(AttemptRecord(message.message_id, message.queue.url, task, attempt, "rejected", action,
                                   now, error=_describe(error), job=job))

    def _end_of_line(self, message: Message, name: str, attempt: int, reason: str, started_at: float) -> None:
        dead_letter = self.dead_letter(message)
        action = dead_letter.hand_over(message)
        self._log_end(message, name, attempt, action, dead_letter, reason)
        self._record(AttemptRecord(message.message_id, message.queue.url, name, attempt, "not run", action,
                                   started_at))

    def _log_end(self, message: Message, task: str | None, attempt: int, action: str, dead_letter: DeadLetter,
                 reason: str) -> None:
        if action == "dead-lettered":
            assert dead_letter.dlq is not None
            log_event("dead-lettered", message.message_id, task, attempt, logging.WARNING,
                      dlq=dead_letter.dlq.url, reason=reason)
        elif action == "handed to redrive":
            log_event("dead-lettered", message.message_id, task, attempt, logging.WARNING,
                      reason=f"{reason}; handed back for the queue's redrive policy")
        else:
            log_event("kept", message.message_id, task, attempt, logging.WARNING,
                      reason=f"{reason}; the queue has no redrive policy and no --dlq was given, so it stays "
                             "in the queue (hidden 15 minutes) for a later worker")

    def _record(self, record: AttemptRecord) -> None:
        if self.job_log is not None and record.job is not None:
            try:
                self.job_log.append(record.job)
            except OSError as exc:
                logger.error("message %s: could not write the job log %s: %s", record.message_id,
                             self.job_log.path, exc)
        if self.config.on_attempt_end is None:
            return
        try:
            self.config.on_attempt_end(record)
        except Exception:
            logger.exception("message %s: on_attempt_end failed", record.message_id)


def _describe(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"
