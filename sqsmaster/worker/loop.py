"""One worker process's loop: receive, run each message's task under its handler, end each attempt.

:class:`WorkerLoop` runs one task at a time in the main thread (signal isolation
needs it). Whatever a message carries, the loop goes on: the steps before the task
are the poison path (:func:`sqsmaster.consumer.read_message`); anything that escapes
a handler, or the loop's own code for one message, is that task's failure (its
message handed back with a backoff); a task that calls ``sys.exit()`` fails
(:class:`~sqsmaster.errors.TaskExit`). After a stop signal, what the loop still owes
(deletes, releases) is bounded by the clock (:mod:`sqsmaster.worker.shutdown`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Sequence

from ..backends import Message, QueueBackend
from ..consumer import read_message
from ..errors import MalformedMessage, QueueDoesNotExist, QueueError, TaskExit, UnknownTask
from ..lease import receive_count
from ..ordering import GroupOrder
from ..outcomes import Outcome
from ..payloads import PayloadStore
from ..prefetch import PendingLeases
from .attempts import Outcomes
from .batches import run_batch
from .config import (  # noqa: F401  (the exit codes and the config are this module's interface too)
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_QUEUE,
    EXIT_SHUTDOWN_INCOMPLETE,
    EXIT_USAGE,
    EXIT_WORKER_DIED,
    WorkerConfig,
    task_timeouts,
)
from .deletes import DEFAULT_MAX_DELAY, DeleteBatcher
from .events import AttemptStart, Observers
from .jobs import submitted_at
from .locks import LazyStore, task_locks
from .orders import RECHECK_AFTER, drop_cancelled
from .receiving import Receiver, open_worker_queue, unreachable_backoff
from .registry import TaskSpec, load_tasks
from .scheduler import SchedulerThread, start_scheduler
from .shutdown import FLUSH_TIMEOUT, release_now
from .signals import ShutdownSignals, WorkerShutdown, block_stop_signals
from .worklog import AttemptRecord, log_event

logger = logging.getLogger("sqsmaster.worker")

class WorkerLoop:
    """One worker process's loop: one task at a time, in the main thread.

    ``claim`` (used by a pool) returns False when the shared ``max_tasks`` budget is spent;
    ``parent`` (a pool child's parent pid) makes the loop stop if that parent dies;
    ``report(code)`` is told the exit code before the process exits at the shutdown deadline.
    """

    def __init__(self, config: WorkerConfig, signals: ShutdownSignals, claim: Callable[[], bool] | None = None,
                 parent: int | None = None, report: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.signals = signals
        self.registry = load_tasks(config.tasks)
        self._claim = claim
        self._parent = parent
        self._report = report
        self.ended = 0
        opened = [open_worker_queue(url, config.queue_constructor) for url in config.queues]
        if config.dlq:
            opened.append(open_worker_queue(config.dlq, config.queue_constructor))
        self.queues: list[QueueBackend] = [queue for queue, _ in opened[:len(config.queues)]]
        self._clients = [client for _, client in opened if client is not None]
        dlq = opened[-1][0] if config.dlq else None
        self.events = Observers(make() for make in config.observers)
        self.store = LazyStore(config.store) if config.store else None  # opened at first use, like the recorder's
        self.locks = task_locks(self.registry, self.store)
        if self.locks.needed:
            self.events.observers.append(self.locks)  # stops a task whose lock expired unrenewed
        self.scheduler: SchedulerThread | None = None
        self.outcomes = Outcomes(dlq, config.notify, self._attempt_ended, config.job_log)
        # A drain (--until-empty) looks at the queues every second, to end within a second of their last
        # delete (another worker's included) rather than a long poll later.
        self.receiver = Receiver(self.queues, wait_time=config.wait_time, visibility_timeout=int(config.sqs_timeout),
                                 should_stop=lambda: signals.stopping or self._orphaned(),
                                 long_poll=not config.until_empty)
        self._cancel_checked: dict[str, float] = {}  # message id -> when its cancel was read (monotonic)
        self.pending = PendingLeases(int(config.sqs_timeout), float(config.alarm_timeout or 1),
                                     thread_setup=block_stop_signals)
        self.order = GroupOrder()
        # Succeeded messages are deleted ten at a time, well inside their visibility timeout.
        self.deletes = DeleteBatcher(max_delay=min(DEFAULT_MAX_DELAY, float(config.sqs_timeout) / 4),
                                     route=self.receiver.twin)
        self._payload_stores: dict[tuple[str | None, str | None], PayloadStore] = {}
        self._lock = threading.Lock()
        self._release_lock = threading.Lock()
        self._releasing: list[Message] = []
        self._current: Message | None = None
        self._released = 0
        self._unreleased: list[Message] = []
        self._finished = False
        signals.on_stop = self._release_unstarted
        signals.on_deadline = self._deadline

    def run(self) -> int:
        """Work until stopped; returns the exit code. Raises only for a bug outside any one message."""
        try:
            code = self._work()
        except QueueDoesNotExist as exc:
            logger.error("%s; stopping", exc)
            code = EXIT_QUEUE
        except WorkerShutdown:
            code = EXIT_OK
        finally:
            incomplete = self._finish()
        return EXIT_SHUTDOWN_INCOMPLETE if incomplete and code == EXIT_OK else code

    def _work(self) -> int:
        if not self._prepare():
            return EXIT_OK
        if self.config.scheduler:
            self.scheduler = start_scheduler(self.registry, self.store, self.config.queues[0],
                                             self.config.queue_constructor)
        logger.info("worker ready (pid %d): queues %s, tasks %s, dead letters %s", os.getpid(),
                    ", ".join(self.config.queues), ", ".join(self.registry.names()),
                    ", ".join(d.mode for d in self.outcomes.dead_letters.values()))
        while not self._should_stop():
            message = self._next_pending() or self._receive()
            if message is None:
                if self.config.until_empty and not len(self.pending) and self.receiver.all_empty():
                    logger.info("every queue is empty: stopping (--until-empty)")
                    break
                continue
            if not self.process(message):
                break
        return EXIT_OK

    def _prepare(self) -> bool:
        """Read each queue's redrive policy: a missing queue shows now, not at the first failure.

        An unreachable endpoint is waited for with the receiver's backoff; False if stopped meanwhile.
        """
        failures = 0
        while not self.signals.stopping:
            try:
                self.outcomes.read_policies(self.queues)
                return True
            except QueueDoesNotExist:
                raise
            except QueueError as exc:
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
        if self._orphaned():
            logger.warning("the parent process is gone: stopping")
            return True
        return False

    def _orphaned(self) -> bool:
        return self._parent is not None and os.getppid() != self._parent

    def _next_pending(self) -> Message | None:
        """The next received message that waited its turn here, unless an operator cancelled it meanwhile
        (it is then deleted unrun). Its cancel is read again only if it waited RECHECK_AFTER or more since
        its receive's check: one bounded store read per long wait, none for a quick turn."""
        while (message := self.pending.pop()) is not None:
            checked = self._cancel_checked.pop(message.message_id, None)
            fresh = checked is not None and time.monotonic() - checked < RECHECK_AFTER
            if fresh or not self.events.observers or drop_cancelled([message], self.events, self.outcomes):
                return message
        return None

    def _receive(self) -> Message | None:
        want = 1 + self.config.prefetch
        if self.config.max_tasks is not None:
            want = max(1, min(want, self.config.max_tasks - self.ended))
        messages = self.receiver.receive(want)
        for message in messages:
            log_event("received", message.message_id, attempt=receive_count(message), queue=message.queue.url)
        if messages and self.events.observers:
            messages = drop_cancelled(messages, self.events, self.outcomes)
            if not len(self.pending):
                self._cancel_checked.clear()  # what was left of earlier receives was released at a stop
            self._cancel_checked.update((message.message_id, time.monotonic()) for message in messages)
        if self.signals.stopping and messages:
            self.pending.add(messages)
            return None
        if not messages:
            return None
        self.order = GroupOrder()  # FIFO: a failure holds back the rest of its group from this receive
        self.pending.add(messages[1:])
        return messages[0]

    def process(self, message: Message) -> bool:
        """Run one message's task (or reject it); never raises but WorkerShutdown.

        Whatever escapes (from a handler, or this loop's own code for the message) is that
        task's failure: logged with the message id, the message handed back with a backoff.
        Returns False when the loop must stop before this message (a stop signal, or the
        pool's ``max_tasks`` budget is spent): the message is then released with the others.
        """
        self._current = message
        try:
            return self._process(message)
        except WorkerShutdown:
            raise
        except BaseException as exc:
            try:
                self.order.settle(message, succeeded=False)
            except Exception:
                pass
            self.outcomes.escaped(message, None, receive_count(message), exc)
            return True
        finally:
            self._current = None

    def _process(self, message: Message) -> bool:
        attempt = receive_count(message)
        if not self.order.admit(message):
            return True  # behind a failed message of its FIFO group: released unrun
        dead_letter = self.outcomes.dead_letter(message)
        try:
            prepared = read_message(message, self.payloads(message), dead_letter.max_receive_count)
            if prepared is None:  # not due yet: handed back or re-sent until it is
                self.order.settle(message, succeeded=False)
                return True
            name, kwargs = prepared
            spec = self.registry.get(name, message.message_id)
            spec.check_kwargs(kwargs, message.message_id)
        except (MalformedMessage, UnknownTask, QueueError) as exc:
            self.order.settle(message, succeeded=False)
            self.outcomes.reject(message, exc, attempt)
            return True
        if spec.retry is not None and spec.retry.exhausted(attempt - 1):
            # It came back after its last attempt (handed to the redrive policy, or a crash): no more runs.
            self.outcomes.end_of_line(message, name, attempt, "past its last retry")
            return True
        lock = self.locks.take(message, spec, kwargs, attempt, task_timeouts(self.config, spec)[0])
        if lock is False:  # held elsewhere: the message was handed back to come again later, not a failure
            self.order.settle(message, succeeded=False)
            return True
        if self.signals.stopping or not self._take_slot():
            self.locks.release(lock)
            self.pending.add([message])
            return False
        try:
            if spec.batch is not None:
                outcome = run_batch(self, message, spec, name, kwargs, attempt, task_timeouts(self.config, spec))
            else:
                outcome = self.run_task(message, spec, name, kwargs, attempt).outcome
            self.order.settle(message, succeeded=outcome == Outcome.SUCCEEDED)
        finally:
            self.ended += 1
            self.locks.release(lock)
        return True

    def _take_slot(self) -> bool:
        return self._claim() if self._claim is not None else True

    def payloads(self, message: Message) -> PayloadStore:
        # One S3 client per worker (per endpoint and region its queues are on, one in practice), made on the
        # first pointer: the store lends its client, the pointer names the bucket. A client costs tens of
        # milliseconds of CPU and a connection of its own.
        from ..backends.sqs import endpoint_and_region  # only a message with a pointer needs it

        url = message.queue.url
        where = endpoint_and_region(url)
        if where not in self._payload_stores:
            self._payload_stores[where] = PayloadStore("s3://payloads", queue_url=url)
        return self._payload_stores[where]

    def run_task(self, message: Message, spec: TaskSpec, name: str, kwargs: dict[str, Any], attempt: int,
                 batch: list[dict[str, Any]] | None = None, members: Sequence[AttemptStart] = ()) -> Any:
        """Run the task under its handler (a batch task's call with ``batch``, the other messages' attempts
        ``members``); returns the ended handler."""
        sqs_timeout, alarm_timeout, hard_timeout = task_timeouts(self.config, spec)
        handler = spec.handler_class(self.config.isolation)(
            message, sqs_timeout=sqs_timeout, alarm_timeout=alarm_timeout, hard_timeout=hard_timeout)
        handler.kwargs = kwargs  # set afterwards: a task kwarg may be called "message" or "sqs_timeout"
        if batch is not None:
            handler.batch = batch  # type: ignore[attr-defined]
        handler.dead_letter_visibility = self.outcomes.dead_letter(message).visibility
        handler.deletes = self.deletes
        if self.config.notify is not None:
            handler.notify = self.config.notify  # type: ignore[method-assign]
        started_at = time.time()
        start = AttemptStart(message.message_id, message.queue.url, name, attempt, kwargs, started_at,
                             started_at + hard_timeout, sqs_timeout, handler.isolation, submitted_at(message))
        self.events.watch(handler, start, members)
        log_event("started", message.message_id, name, attempt, isolation=handler.isolation)
        try:
            with handler, self.signals.running_task():
                try:
                    handler.run()
                except (SystemExit, KeyboardInterrupt) as exc:  # the task's, not ours: it fails, we go on
                    raise TaskExit(exc) from exc
        except WorkerShutdown:  # the handler released the message (visibility 0)
            self.outcomes.released(message, handler, name, attempt, started_at)
            raise
        self.outcomes.after_run(message, handler, name, attempt, started_at)
        return handler

    def _attempt_ended(self, record: AttemptRecord) -> None:
        self.events.attempt_ended(record)
        if self.config.on_attempt_end is not None:
            self.config.on_attempt_end(record)

    # -- shutdown: what a stopping worker still owes, bounded by the clock ----------------------------

    def _release_unstarted(self, deadline: float | None = None, wait: float | None = None) -> None:
        """Release every received-but-unstarted message at once (at the first stop signal, and at the end).

        One release at a time (the watcher thread's and the main thread's); with ``wait``, give up
        after that many seconds of waiting for the other and name the messages it is still releasing.
        """
        if not self._release_lock.acquire(timeout=-1 if wait is None else max(wait, 0.0)):
            for unconfirmed in self._releasing:
                logger.error("message %s: received, not started; its release was not confirmed before the worker "
                             "stopped, so it comes back when its visibility timeout expires", unconfirmed.message_id)
            with self._lock:
                self._unreleased += self._releasing
            return
        try:
            while (message := self.pending.pop()) is not None:
                self._releasing.append(message)
            if self._releasing:
                released, failed = release_now(self._releasing, self.receiver.twin,
                                               deadline if deadline is not None else time.monotonic() + FLUSH_TIMEOUT)
                with self._lock:
                    self._released += len(released)
                    self._unreleased += failed
        finally:
            self._releasing = []
            self._release_lock.release()

    def _finish(self) -> bool:
        """Flush deletes and release what is left, within FLUSH_TIMEOUT; True if something could not be done."""
        deadline = time.monotonic() + FLUSH_TIMEOUT
        undeleted = self.deletes.close(timeout=FLUSH_TIMEOUT)
        self._release_unstarted(deadline, wait=deadline - time.monotonic())
        self.pending.close()
        self.receiver.close()
        if self.scheduler is not None:
            self.scheduler.close(timeout=max(deadline - time.monotonic(), 0.5))
        self.events.close(timeout=max(deadline - time.monotonic(), 0.5))
        if self.store is not None:
            self.store.close()
        for client in self._clients:
            client.close()
        with self._lock:
            self._finished = True
            released, unreleased = self._released, len(self._unreleased)
        if self.signals.stopping:
            logger.info("stopped after %s: %d task(s) ended, %d unstarted message(s) released%s", self.signals.cause(),
                        self.ended, released, "" if not (unreleased or undeleted) else
                        f"; {unreleased} could not be released and {len(undeleted)} delete(s) could not be made "
                        "(named above): those messages come back after their visibility timeout")
        return bool(undeleted or unreleased)

    def _deadline(self) -> None:
        """``grace + SHUTDOWN_MARGIN`` after the stop signal (in the watcher thread): name what is left undone
        and, for a worker process, exit now: the clock bounds a shutdown, whatever the endpoint does."""
        with self._lock:
            if self._finished:
                return
        current = self._current
        logger.error("shutdown deadline: %.0fs after %s (--grace %s + %ss) the worker is still not done; %s",
                     (self.signals.grace or 0) + (self.signals.margin or 0), self.signals.cause(), self.signals.grace,
                     self.signals.margin, "exiting now" if self.config.exit_at_deadline else "giving up on it")
        if current is not None:
            logger.error("message %s: its task or its release did not finish by the deadline; it comes back when "
                         "its visibility timeout expires", current.message_id)
        for message in self.deletes.unconfirmed():
            logger.error("message %s: task succeeded but its delete was not made by the deadline; it will run again",
                         message.message_id)
        if not self.config.exit_at_deadline:  # in-process: the loop still finishes (its calls are bounded)
            return
        unreleased = list(self._releasing)
        while (message := self.pending.pop()) is not None:
            unreleased.append(message)
        for message in unreleased:
            logger.error("message %s: received, not started, not released by the deadline; it comes back when its "
                         "visibility timeout expires", message.message_id)
        if self._report is not None:
            self._report(EXIT_SHUTDOWN_INCOMPLETE)
        os._exit(EXIT_SHUTDOWN_INCOMPLETE)
