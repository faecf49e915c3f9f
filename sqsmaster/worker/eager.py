"""The runner of eager mode (see :mod:`sqsmaster.eager`): decode a message as a worker does and call its task.

Registered with the core at import, so ``TaskManager(url, eager=True)`` finds it without the core
importing the worker.
"""

from __future__ import annotations

import logging
from typing import Any

from ..eager import EagerRunner, register_eager_runner
from ..encoding import decode_task
from ..testing import LocalMessage
from .registry import Registry, default_registry, load_tasks

logger = logging.getLogger(__name__)

#: What an eager handler class gets for the timeouts it must be constructed with (it runs inline, unsupervised).
_EAGER_SQS_TIMEOUT, _EAGER_ALARM_TIMEOUT = 30, 10


def eager_runner(tasks: Any = None) -> EagerRunner:
    """A runner for the tasks of ``tasks`` (anything :func:`load_tasks` takes; None: the default registry,
    read at each call, so tasks registered after the TaskManager was made are found)."""
    fixed: Registry | None = None if tasks is None else load_tasks(tasks)

    def run(message: LocalMessage) -> Any:
        registry = fixed if fixed is not None else default_registry
        name, kwargs = decode_task(message.body, message.message_id)
        spec = registry.get(name, message.message_id)  # UnknownTask, as the worker would report it
        spec.check_kwargs(kwargs, message.message_id)  # MalformedMessage: kwargs the function cannot take
        logger.debug("message %s: running task %s eagerly", message.message_id, name)
        if isinstance(spec.target, type):  # a MessageHandler subclass: its run(), without the supervisor
            handler = spec.target(message, sqs_timeout=_EAGER_SQS_TIMEOUT, alarm_timeout=_EAGER_ALARM_TIMEOUT,
                                  **kwargs)
            return handler.run()
        if spec.batch is not None:  # a batch task takes a list of kwargs: here, a batch of one
            return spec.target([kwargs])
        return spec.target(**kwargs)

    return run


register_eager_runner(eager_runner)
