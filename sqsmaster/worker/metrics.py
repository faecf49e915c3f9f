"""Prometheus metrics of what a worker runs: a :class:`~sqsmaster.worker.events.WorkerEvents` observer.

Each worker process (each pool child) makes one :class:`MetricsObserver`; its
counts go to files of its own in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode), which the worker's parent adds up at each scrape
(:mod:`sqsmaster.worker.exporter`). Labels are the queue's name and the task's
name, never a message id: a task name a message carries counts as ``other``
unless the worker runs such a task, so a hostile body cannot grow the series.
``prometheus_client`` is an optional extra (``pip install 'sqsmaster[metrics]'``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from ..backends import sqs as sqs_backend
from ..errors import ConfigurationError, MemoryCapExceeded
from ..outcomes import Outcome
from .events import AttemptStart, WorkerEvents
from .worklog import AttemptRecord, event_name

logger = logging.getLogger(__name__)

#: The one-line hint of every error about the missing extra.
INSTALL_HINT = "pip install 'sqsmaster[metrics]'"
#: The task label of a message whose task this worker does not run (rejected): bounded label values.
OTHER_TASK = "other"
#: Task duration and queue wait buckets (s): a tenth of a second to the 12 h a task may hold its message.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200)
#: Heartbeat lag buckets (s): a few ms is a healthy thread; seconds are a task starving it of the GIL.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Why a task was stopped before its end (``sqsmaster_hard_kills_total``'s ``reason``).
KILL_REASONS = ("timeout", "memory_cap", "operator_kill", "stuck")


def prometheus() -> Any:
    """The ``prometheus_client`` module; raises ConfigurationError naming the extra when it is missing."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(f"--metrics needs prometheus_client, which is not installed: {INSTALL_HINT}") \
            from None
    return prometheus_client


def queue_label(url: str) -> str:
    """A queue's name for a label: the last part of an SQS URL's path, ``?queue=`` of a sqlite:// URL."""
    parts = urlsplit(url)
    named = parse_qs(parts.query).get("queue")
    if named:
        return named[0]
    return parts.path.rstrip("/").rsplit("/", 1)[-1] or parts.netloc or url


def kill_reason(record: AttemptRecord, operator: bool) -> str | None:
    """Why the attempt was stopped before its end (one of :data:`KILL_REASONS`), or None."""
    if record.outcome == Outcome.TIMED_OUT:
        return "timeout"
    if record.outcome in (Outcome.STUCK, Outcome.KILLED):
        return "operator_kill" if operator or record.outcome == Outcome.KILLED else "stuck"
    if record.error is not None and record.error.startswith(MemoryCapExceeded.__name__ + ":"):
        return "memory_cap"
    return None


class _Metrics:
    """This process's metric objects, on a value class of its own (made after any fork: its lock is ours)."""

    def __init__(self, client: Any) -> None:
        from prometheus_client import values

        self.previous_value_class = values.ValueClass
        values.ValueClass = values.MultiProcessValue()
        task, kind = ["queue", "task"], {"registry": None}
        self.tasks = client.Counter("sqsmaster_tasks", "Attempts ended, by outcome (the job log's words)",
                                    [*task, "outcome"], **kind)
        self.duration = client.Histogram("sqsmaster_task_duration_seconds", "Run time of each attempt", task,
                                         buckets=DURATION_BUCKETS, **kind)
        self.queue_wait = client.Histogram("sqsmaster_task_queue_wait_seconds",
                                           "From the message's SentTimestamp to its attempt's start", task,
                                           buckets=DURATION_BUCKETS, **kind)
        self.in_progress = client.Gauge("sqsmaster_tasks_in_progress", "Attempts running now", task,
                                        multiprocess_mode="livesum", **kind)
        self.heartbeats = client.Counter("sqsmaster_heartbeats", "Heartbeat ticks of running attempts", task, **kind)
        self.heartbeat_lag = client.Histogram("sqsmaster_heartbeat_lag_seconds",
                                              "How late each heartbeat ran against its schedule (GIL starvation)",
                                              task, buckets=LAG_BUCKETS, **kind)
        self.hard_kills = client.Counter("sqsmaster_hard_kills", "Attempts stopped before their end, by reason",
                                         [*task, "reason"], **kind)
        self.lease_losses = client.Counter("sqsmaster_lease_losses",
                                           "Attempts whose message's lease was lost (it may run twice)", task, **kind)
        self.sqs_errors = client.Counter("sqsmaster_sqs_errors", "Failed SQS calls, by operation and error code",
                                         ["operation", "code"], **kind)

    def restore(self) -> None:
        from prometheus_client import values

        values.ValueClass = self.previous_value_class


class MetricsObserver(WorkerEvents):
    """Counts each attempt of this worker process into Prometheus metrics (multiprocess mode).

    :param tasks: the names of the tasks the worker runs (the only task label values besides ``other``)
    Must be made where ``PROMETHEUS_MULTIPROC_DIR`` is set (the exporter sets it before it forks).
    """

    def __init__(self, tasks: Iterable[str]) -> None:
        self._known = frozenset(tasks)
        self._metrics = _Metrics(prometheus())
        self._running: dict[str, tuple[str, str]] = {}  # message id -> labels of its attempt, while it runs
        self._killed: set[str] = set()
        self._remove_hook: Callable[[], None] = sqs_backend.on_call_error(self._sqs_error)

    def _labels(self, queue_url: str, task: str | None) -> tuple[str, str]:
        return queue_label(queue_url), task if task in self._known else OTHER_TASK

    def attempt_started(self, start: AttemptStart) -> None:
        labels = self._running[start.message_id] = self._labels(start.queue_url, start.task)
        self._metrics.in_progress.labels(*labels).inc()
        if start.submitted is not None:
            self._metrics.queue_wait.labels(*labels).observe(max(0.0, start.started - start.submitted))

    def heartbeat(self, start: AttemptStart, at: float, beats: int) -> None:
        self._metrics.heartbeats.labels(*self._labels(start.queue_url, start.task)).inc()

    def heartbeat_lag(self, start: AttemptStart, lag: float) -> None:
        self._metrics.heartbeat_lag.labels(*self._labels(start.queue_url, start.task)).observe(lag)

    def kill_requested(self, start: AttemptStart) -> None:
        self._killed.add(start.message_id)

    def attempt_ended(self, record: AttemptRecord) -> None:
        ran = self._running.pop(record.message_id, None)
        labels = ran or self._labels(record.queue_url, record.task)
        metrics = self._metrics
        if ran is not None:
            metrics.in_progress.labels(*labels).dec()
            if record.runtime is not None:
                metrics.duration.labels(*labels).observe(record.runtime)
        if record.job is not None:  # one count per job record: what the job log and the job store show
            metrics.tasks.labels(*labels, event_name(str(record.job.outcome))).inc()
        reason = kill_reason(record, record.message_id in self._killed)
        self._killed.discard(record.message_id)
        if reason is not None:
            metrics.hard_kills.labels(*labels, reason).inc()
        if record.lease_lost or Outcome.LEASE_LOST in (record.outcome, record.action):
            metrics.lease_losses.labels(*labels).inc()

    def _sqs_error(self, operation: str, code: str) -> None:
        self._metrics.sqs_errors.labels(operation, code).inc()

    def close(self, timeout: float) -> None:
        self._remove_hook()
        self._metrics.restore()


def observer_maker(tasks: Iterable[str]) -> Callable[[], WorkerEvents]:
    """A maker for ``Worker(observers=[...])``: each worker process calls it once."""
    names = frozenset(tasks)
    return lambda: MetricsObserver(names)
