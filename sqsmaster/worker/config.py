"""A worker process's settings (:class:`WorkerConfig`), each task's timeouts, and the worker's exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..supervise import DEFAULT_HARD_TIMEOUT
from .events import WorkerEvents
from .registry import TaskSpec
from .worklog import AttemptRecord

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_QUEUE = 3
EXIT_WORKER_DIED = 4
EXIT_SHUTDOWN_INCOMPLETE = 5
#: What each exit code of ``sqsmaster worker`` means (the README and ``--help`` say the same).
EXIT_CODES = {
    EXIT_OK: "stopped cleanly: after SIGTERM/SIGINT, --until-empty or --max-tasks",
    EXIT_FAILURE: "an internal error of the worker (its traceback is in the log)",
    EXIT_USAGE: "bad usage or configuration (one line on stderr)",
    EXIT_QUEUE: "a queue does not exist",
    EXIT_WORKER_DIED: "--concurrency: a worker process died (a crash, a signal, os._exit, an internal error); "
                      "the pool replaced it and went on, but says so",
    EXIT_SHUTDOWN_INCOMPLETE: "stopped, but some deletes or releases could not be made in time (each logged by "
                              "message id; those messages come back after their visibility timeout)",
}


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
    #: At the shutdown deadline, exit the process (the CLI and pool children) rather than only log it.
    exit_at_deadline: bool = False
    #: Makers of this process's observers (the job store's recorder, metrics): each worker process,
    #: a pool child included, calls them once, so an observer's threads and connections are its own.
    observers: list[Callable[[], WorkerEvents]] = field(default_factory=list)
    #: The job store's URL, for the claims of periodic tasks' slots and task locks (None: no store).
    store: str | None = None
    #: Send the periodic tasks' due slots from this process (a pool: its first child only).
    scheduler: bool = True


def task_timeouts(config: WorkerConfig, spec: TaskSpec | None) -> tuple[float, float, float]:
    """``(sqs_timeout, alarm_timeout, hard_timeout)`` for a task: its own, else the worker's.

    A task that sets its own ``sqs_timeout`` but no ``alarm_timeout`` heartbeats every third of it.
    """
    own_sqs = spec.sqs_timeout if spec is not None else None
    own_alarm = spec.alarm_timeout if spec is not None else None
    own_hard = spec.hard_timeout if spec is not None else None
    sqs_timeout = float(own_sqs or config.sqs_timeout)
    alarm_timeout = float(own_alarm or (config.alarm_timeout if own_sqs is None else None) or max(sqs_timeout / 3, 0.5))
    return sqs_timeout, alarm_timeout, float(own_hard or config.hard_timeout)
