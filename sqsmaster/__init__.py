"""sqsmaster: supervise long-running, CPU-heavy, uncooperative tasks fed through Amazon SQS."""

from .backends import LocalQueue, Message, QueueBackend, SendEntry, open_queue
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
    TaskStuck,
    UnknownTask,
)
from .manager import TaskManager
from .producer import Task
from .registry import Registry, load_tasks, task
from .retry import Retry, RetryPolicy, exponential, fixed, linear
from .supervise import MessageHandler
from .testing import LocalMessage
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError", "EncodeError", "HandlerInterrupt", "HardTimeoutExceeded", "LeaseLost", "LimitExceeded",
    "LocalQueue", "MalformedMessage", "Message", "MessageHandler", "MessageTooLarge", "QueueBackend",
    "QueueDoesNotExist", "QueueError", "SendEntry", "SqsMasterError", "TaskManager", "TaskStuck", "UnknownTask",
    "open_queue", "__version__",
    "MemoryCapExceeded", "TaskAbandoned", "TaskCrashed", "TaskExit", "TaskFailed",
    "Registry", "Retry", "RetryPolicy", "Worker", "exponential", "fixed", "linear", "load_tasks", "task",
    "SubmitFailed", "Task", "CredentialsMissing", "LocalMessage",
]
