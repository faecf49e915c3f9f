"""sqsmaster: supervise long-running, CPU-heavy, uncooperative tasks fed through Amazon SQS.

The names here are what users write and what they catch. The rest stays importable from its module:
backend authors use :mod:`sqsmaster.backends` (``QueueBackend``, ``Message``, ``SendEntry``), the
worker's parts live in :mod:`sqsmaster.worker`, the supervisor's in :mod:`sqsmaster.supervise`, and the
operator's tools in :mod:`sqsmaster.ops`.
"""

import warnings
from typing import Any

from .backends import LocalQueue, open_queue
from .errors import (
    ConfigurationError,
    CredentialsMissing,
    EncodeError,
    HandlerInterrupt,
    HardTimeoutExceeded,
    LeaseLost,
    LimitExceeded,
    MalformedMessage,
    MemoryCapExceeded,
    MessageTooLarge,
    QueueDoesNotExist,
    QueueError,
    SqsMasterError,
    SubmitFailed,
    TaskAbandoned,
    TaskCrashed,
    TaskExit,
    TaskFailed,
    TaskKilled,
    TaskStuck,
    UnknownTask,
    WorkerShutdown,
)
from .manager import TaskManager
from .ops.localmap import LocalPool, MapResult, imap_unordered
from .ops.localmap import map as map  # noqa: A004 (sqsmaster.map; kept out of __all__ so * never hides the builtin)
from .outcomes import Action, Outcome
from .producer import TaskCall
from .supervise import MessageHandler
from .testing import LocalMessage
from .worker.facade import Worker
from .worker.registry import Registry, load_tasks, task
from .worker.retry import Retry, RetryPolicy, exponential, fixed, linear
from .worker.schedules import cron, every

__version__ = "0.1.0"

__all__ = [
    # Submitting tasks
    "TaskManager", "TaskCall",
    # Running them: the worker, the task registry, retries, the handler for a hand-written loop, and the
    # words for how an attempt ended (AttemptRecord.outcome and .action compare equal to them)
    "Worker", "task", "Registry", "load_tasks", "Retry", "RetryPolicy", "exponential", "fixed", "linear",
    "MessageHandler", "Outcome", "Action",
    # A local parallel map, each call supervised (sqsmaster.map too, left out here: * must not hide the builtin)
    "LocalPool", "MapResult", "imap_unordered",
    # Periodic tasks: @task(schedule=every(minutes=10)) or @task(schedule=cron("0 3 * * *"))
    "every", "cron",
    # Queues
    "open_queue", "LocalQueue",
    # Handler unit tests: a message built by hand (sqstaskmaster's LocalMessage)
    "LocalMessage",
    # Errors: the root, bad input, the queue, the messages, the tasks
    "SqsMasterError",
    "ConfigurationError", "CredentialsMissing", "LimitExceeded", "MessageTooLarge", "EncodeError", "SubmitFailed",
    "QueueError", "QueueDoesNotExist", "LeaseLost",
    "MalformedMessage", "UnknownTask", "TaskExit", "TaskFailed", "TaskCrashed", "MemoryCapExceeded",
    # Interrupts raised inside a running task (BaseException: task code's except Exception cannot eat them)
    "HandlerInterrupt", "HardTimeoutExceeded", "TaskStuck", "TaskKilled", "TaskAbandoned", "WorkerShutdown",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Task":
        warnings.warn("sqsmaster.Task is deprecated (removed in 0.2): use sqsmaster.TaskCall, the same class",
                      DeprecationWarning, stacklevel=2)
        return TaskCall
    if name in ("Message", "QueueBackend", "SendEntry"):
        raise AttributeError(f"sqsmaster.{name} moved: from sqsmaster.backends import {name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
