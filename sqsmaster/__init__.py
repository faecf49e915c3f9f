"""sqsmaster: supervise long-running, CPU-heavy, uncooperative tasks fed through Amazon SQS."""

from .backends import LocalQueue, Message, QueueBackend, SendEntry, open_queue
from .errors import (
    ConfigurationError,
    EncodeError,
    HandlerInterrupt,
    HardTimeoutExceeded,
    LeaseLost,
    LimitExceeded,
    MalformedMessage,
    MessageTooLarge,
    QueueDoesNotExist,
    QueueError,
    SqsMasterError,
    SubmitFailed,
    TaskStuck,
    UnknownTask,
)
from .handler import MessageHandler
from .manager import TaskManager
from .producer import Task

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError", "EncodeError", "HandlerInterrupt", "HardTimeoutExceeded", "LeaseLost", "LimitExceeded",
    "LocalQueue", "MalformedMessage", "Message", "MessageHandler", "MessageTooLarge", "QueueBackend",
    "QueueDoesNotExist", "QueueError", "SendEntry", "SqsMasterError", "TaskManager", "TaskStuck", "UnknownTask",
    "open_queue", "__version__",
    "SubmitFailed", "Task",
]
