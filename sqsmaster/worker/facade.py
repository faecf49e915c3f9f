"""``Worker``: the consumer loop users no longer write. Receive, run each registered task, retry, dead-letter.

One worker process runs one task at a time in its main thread, so signal
isolation works; ``concurrency=N`` forks N such processes (see
:mod:`sqsmaster.worker.pool`). The flow of one message::

    receive ─▶ decode ─▶ registry ─▶ MessageHandler (heartbeat, hard timeout) ─▶ delete
                  │          │                 └─ failure ─▶ retry policy ─▶ visibility = delay
                  └──────────┴─ malformed / unknown / past the last retry ─▶ dead-letter path

Whatever a message carries, the loop goes on: the steps before the task are the
poison path (:func:`sqsmaster.consumer.read_message`); anything that escapes a
handler, or the worker's own code for a message, is that task's failure; a task
that calls ``sys.exit()`` fails (:class:`~sqsmaster.errors.TaskExit`).

SIGTERM or SIGINT stops receiving at once; received-but-unstarted messages are
released with visibility 0; a running task gets ``grace`` seconds (its
heartbeats continue), then it is stopped and released. A second signal
releases everything now. What the worker still owes then (deletes, releases)
is bounded by the clock (see :mod:`sqsmaster.worker.shutdown`). ``run()`` returns the
exit code: see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import socket
from pathlib import Path
from typing import Any, Callable

from ..backends import check_url
from ..errors import ConfigurationError
from ..limits import MAX_RECEIVE_MESSAGES, check_seconds, check_visibility_timeout, check_wait_time
from ..store import StoreError, open_store
from ..store.base import FAILURE_TTL, SUCCESS_TTL
from ..supervise import DEFAULT_HARD_TIMEOUT
from .events import WorkerEvents
from .exporter import MetricsExporter, parse_address
from .locks import LazyStore, task_locks
from .loop import (  # noqa: F401  (the exit codes are part of this module's interface)
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_QUEUE,
    EXIT_SHUTDOWN_INCOMPLETE,
    EXIT_USAGE,
    EXIT_WORKER_DIED,
    WorkerConfig,
    WorkerLoop,
    task_timeouts,
)
from .metrics import observer_maker, prometheus
from .pool import run_pool
from .recorder import StoreRecorder
from .registry import Registry, load_tasks
from .shutdown import SHUTDOWN_MARGIN
from .signals import ShutdownSignals
from .worklog import AttemptRecord

logger = logging.getLogger("sqsmaster.worker")


class Worker:
    """Run registered tasks from one or more queues until stopped.

    :param queue: the queue URL (or a list of URLs, highest priority first)
    :param tasks: a :class:`~sqsmaster.worker.registry.Registry`, a module, a module name, or a list of them
    :param concurrency: tasks at once, each in its own process
    :param isolation: default isolation for tasks that do not set one ("signal" or "process")
    :param sqs_timeout: visibility held on a message while its task runs (s)
    :param alarm_timeout: heartbeat period (s); default ``sqs_timeout / 3``
    :param hard_timeout: default hard timeout of a task (s)
    :param wait_time: longest receive wait (s, ≤ 20): an idle worker long-polls one queue at a time for
        this long (on SQS; a stop does not wait for it, see :mod:`sqsmaster.worker.receiving`)
    :param max_tasks: exit after this many tasks ended, whatever their outcome
    :param until_empty: exit once a receive is empty, no task of ours runs and every queue
        reports no visible, in-flight or delayed message (such a worker does not long-poll: it
        receives with 1 s waits, to end within about a second of the last delete)
    :param prefetch: messages held beyond the running one (heartbeated until they start)
    :param grace: seconds a running task may finish after SIGTERM/SIGINT
    :param dlq: an explicit dead-letter queue URL, for queues with no redrive policy
    :param queues: more queues after ``queue``, in priority order
    :param notify: ``notify(exception, context)`` for failures and rejected messages
    :param on_attempt_end: called with an :class:`~sqsmaster.worker.worklog.AttemptRecord` after each attempt
        (in the worker process that ran it)
    :param job_log: append one :class:`~sqsmaster.worker.jobs.JobRecord` per attempt to this JSON-lines
        file (shared by the ``concurrency`` processes; ``sqsmaster report`` reads it)
    :param exit_at_deadline: ``grace`` + :data:`~sqsmaster.worker.shutdown.SHUTDOWN_MARGIN` seconds after a
        stop signal, exit the process (``os._exit``) with whatever is left logged; without it (the
        default in-process) the worker only logs it, and returns once its bounded calls end
    :param observers: makers of :class:`~sqsmaster.worker.events.WorkerEvents` observers; each worker
        process (each pool child) calls every maker once and tells the observer of each attempt's start,
        heartbeats and end
    :param store: the job store's URL (``sqlite:///PATH``, ``dynamodb://TABLE``): each worker process records
        itself and every attempt there, through a background writer (a slow store never delays a task), and
        obeys operators' kills and cancels. A store that cannot be reached at start is logged and the worker
        runs (it records once the store answers); a URL no store understands is a ConfigurationError
    :param store_keep_succeeded: seconds a succeeded attempt stays in the store (default one day)
    :param store_keep_failed: seconds any other finished attempt stays (default seven days)
    :param metrics: serve Prometheus metrics at this address (``PORT``, ``HOST:PORT``; a bare port listens on
        127.0.0.1 only), added up over the ``concurrency`` processes (see :mod:`sqsmaster.worker.exporter`);
        needs ``pip install 'sqsmaster[metrics]'``
    :param scheduler: send the periodic tasks' due slots (they need ``store``: its claims make each slot go
        out once across the fleet); False (``--no-scheduler``) when EventBridge Scheduler sends them
    :raises ConfigurationError: for settings that cannot work, before anything is received
    """

    def __init__(self, queue: str | list[str], tasks: Any, *, concurrency: int = 1, isolation: str = "signal",
                 sqs_timeout: float = 30, alarm_timeout: float | None = None,
                 hard_timeout: float = DEFAULT_HARD_TIMEOUT, wait_time: float = 20, max_tasks: int | None = None,
                 until_empty: bool = False, prefetch: int = 0, grace: float = 30, dlq: str | None = None,
                 queues: list[str] | None = None, notify: Callable[..., None] | None = None,
                 on_attempt_end: Callable[[AttemptRecord], None] | None = None,
                 queue_constructor: Callable[[str], Any] | None = None, job_log: str | None = None,
                 exit_at_deadline: bool = False,
                 observers: list[Callable[[], WorkerEvents]] | None = None, store: str | None = None,
                 store_keep_succeeded: float = SUCCESS_TTL, store_keep_failed: float = FAILURE_TTL,
                 metrics: str | None = None, scheduler: bool = True) -> None:
        urls = ([queue] if isinstance(queue, str) else list(queue)) + list(queues or [])
        if not urls:
            raise ConfigurationError("a worker needs at least one queue URL")
        _check_distinct(urls, dlq)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch < MAX_RECEIVE_MESSAGES:
            raise ConfigurationError(f"prefetch must be an int in [0, {MAX_RECEIVE_MESSAGES - 1}], not {prefetch!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ConfigurationError(f"max_tasks must be an int >= 1, not {max_tasks!r}")
        check_visibility_timeout("sqs_timeout", sqs_timeout)
        check_wait_time(wait_time)
        check_seconds("grace", grace, allow_minimum=True)
        alarm = alarm_timeout if alarm_timeout is not None else max(sqs_timeout / 3, 0.5)
        if queue_constructor is None:
            for url in urls + ([dlq] if dlq else []):
                check_url(url)  # a typo in a URL's form shows now, before the banner and any receive
        if job_log is not None:
            _check_job_log(str(job_log))
        observers = list(observers or [])
        if store is not None:
            observers.append(recorder_maker(store, urls, store_keep_succeeded, store_keep_failed))
        self.registry: Registry = load_tasks(tasks)
        self.metrics = None if metrics is None else parse_address(metrics)
        if self.metrics is not None:
            prometheus()  # missing: one line naming the extra, now
            observers = [*(observers or []), observer_maker(self.registry.names())]
        self.config = WorkerConfig(urls, self.registry, concurrency, isolation, sqs_timeout, alarm, hard_timeout,
                                   wait_time, max_tasks, until_empty, prefetch, grace, dlq, notify,
                                   on_attempt_end, queue_constructor, None if job_log is None else str(job_log),
                                   exit_at_deadline, observers, store, bool(scheduler))
        _check_store(self.registry, store)
        # Fail on a bad isolation or timeouts here, not at the first message.
        for spec in (self.registry.get(name) for name in self.registry.names()):
            sqs, alarm_, hard = task_timeouts(self.config, spec)
            spec.handler_class(isolation)(_Probe(), sqs_timeout=sqs, alarm_timeout=alarm_, hard_timeout=hard)

    def run(self) -> int:
        """Work until stopped, ``max_tasks`` or ``until_empty``; returns the exit code (:data:`EXIT_CODES`)."""
        self._banner()
        exporter = None
        if self.metrics is not None:  # before any worker process forks: they write where it serves from
            exporter = MetricsExporter(self.metrics, self.config.queues, self.config.concurrency,
                                       self.config.queue_constructor)
            exporter.start()
        try:
            if self.config.concurrency > 1:
                return run_pool(self.config)
            with ShutdownSignals(grace=self.config.grace, margin=SHUTDOWN_MARGIN) as signals:
                return WorkerLoop(self.config, signals).run()
        finally:
            if exporter is not None:
                exporter.close()

    def _banner(self) -> None:
        """What is starting, once per worker (a pool's processes then each log "worker ready")."""
        from .. import __version__

        config = self.config
        logger.info("sqsmaster %s worker starting (pid %d on %s, Python %s): concurrency %d, isolation %s, "
                    "sqs-timeout %gs, heartbeat every %gs, hard-timeout %gs, grace %gs, prefetch %d", __version__,
                    os.getpid(), socket.gethostname(), platform.python_version(), config.concurrency, config.isolation,
                    config.sqs_timeout, config.alarm_timeout or 0, config.hard_timeout, config.grace, config.prefetch)


def recorder_maker(url: str, queues: list[str], keep_succeeded: float = SUCCESS_TTL,
                   keep_failed: float = FAILURE_TTL) -> Callable[[], WorkerEvents]:
    """The maker of each worker process's :class:`~sqsmaster.worker.recorder.StoreRecorder` for the store at
    ``url``, after a look at the store now: ConfigurationError for a URL no store understands or TTLs that
    are not positive; a store that cannot be opened is only logged (see :class:`Worker`'s ``store``)."""
    for name, seconds in (("store_keep_succeeded", keep_succeeded), ("store_keep_failed", keep_failed)):
        check_seconds(name, seconds)
    try:
        open_store(url).close()
    except StoreError as exc:
        # The store is for seeing and steering; SQS holds the work. A worker that refused to start while
        # the store is down would turn a monitoring outage into a processing one (a fleet scaling out
        # during a DynamoDB incident), so it runs, and its writer logs the outage and its cost.
        logger.warning("%s; the worker runs without it and records once it answers", exc)
    return functools.partial(StoreRecorder, url, list(queues), keep_succeeded, keep_failed)


def _check_distinct(urls: list[str], dlq: str | None) -> None:
    """A queue listed twice would be received from twice per pass; a --dlq that is a worked queue would
    send each dead letter back to run again, forever."""
    for index, url in enumerate(urls):
        if url in urls[:index]:
            raise ConfigurationError(f"queue {url} is given twice; list each queue once, in priority order")
    if dlq is not None and dlq in urls:
        raise ConfigurationError(f"--dlq {dlq} is also a queue the worker works on: each dead letter would run "
                                 "again; give a queue of its own")


def _check_store(registry: Registry, url: str | None) -> None:
    """A task that takes a lock needs a store (whether it answers now is the recorder's look: see
    :func:`recorder_maker`)."""
    task_locks(registry, None if url is None else LazyStore(url))


def _check_job_log(path: str) -> None:
    """The job log must be writable now, not found unwritable at the first attempt (each then logs an error)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as exc:
        raise ConfigurationError(f"job log {path}: cannot write to it ({exc.strerror or exc})") from None


class _Probe:
    """A stand-in message to validate handler settings at construction time."""

    message_id = None
    attributes: dict[str, str] = {}


