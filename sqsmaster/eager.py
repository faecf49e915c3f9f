"""Eager mode: ``submit`` runs the task inline instead of sending it (TaskTiger's ``ALWAYS_EAGER``).

``TaskManager(url, eager=True)`` (or ``SQSMASTER_EAGER=1`` in the environment) encodes and
checks every task exactly as it would for SQS (the same code up to the send: EncodeError,
MessageTooLarge, LimitExceeded, the S3 offload), then decodes the body back, so the task gets
the kwargs a worker would give it (a tuple arrives as a list, a datetime as its string), and
calls the registered task in this process. Its exception propagates from ``submit``; nothing
is sent and no queue is opened. Delays (``countdown``, ``eta``, ``delay_seconds``) are ignored:
an eager task runs at once, without a hard timeout or a lease (there is no message to keep).

This core module only holds the switch and the stand-in queue; the runner, which needs the task
registry, is registered by :mod:`sqsmaster.worker.eager` (imported with the package), so the core
never imports the worker.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable

from .backends import SendEntry
from .errors import ConfigurationError
from .payloads import PayloadStore, parse_pointer, resolve_payload
from .testing import LocalMessage

#: The environment variable that turns eager mode on for every TaskManager that does not say.
EAGER_ENV = "SQSMASTER_EAGER"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

#: ``factory(tasks) -> runner``; ``runner(message)`` decodes and runs the message's task, returning its value.
EagerRunner = Callable[[LocalMessage], Any]
_runner_factory: Callable[[Any], EagerRunner] | None = None


def register_eager_runner(factory: Callable[[Any], EagerRunner]) -> None:
    """Install what turns ``tasks`` (a Registry, a module, its name, or None: the default registry) into a runner."""
    global _runner_factory
    _runner_factory = factory


def eager_enabled(eager: bool | None) -> bool:
    """``eager`` when given, else :data:`EAGER_ENV` (``1``/``true``/``yes``/``on`` or ``0``/``false``/...)."""
    if eager is not None:
        return bool(eager)
    value = os.environ.get(EAGER_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigurationError(f"{EAGER_ENV}={os.environ[EAGER_ENV]!r} is neither 1/true/yes/on nor 0/false/no/off")
    return value in _TRUE


class EagerQueue:
    """The queue of an eager TaskManager: ``send`` runs the task; receiving is refused (nothing is ever queued)."""

    def __init__(self, url: str, tasks: Any = None, payloads: PayloadStore | None = None) -> None:
        if _runner_factory is None:  # only when sqsmaster.eager is used without the sqsmaster package
            raise ConfigurationError("eager mode needs the task registry: import sqsmaster first")
        self.url = url
        self.fifo = url.rstrip("/").endswith(".fifo")
        self._run = _runner_factory(tasks)
        self._payloads = payloads

    def send(self, entry: SendEntry) -> dict[str, Any]:
        """Run ``entry``'s task now, as a worker would receive it; returns ``{"MessageId", "Result"}``.

        Raises what the task raises, MalformedMessage for a body a worker could not read
        and UnknownTask for a name the registry does not hold.
        """
        message = received_copy(entry)
        pointer = parse_pointer(message)
        resolve_payload(message, self._payloads)  # a body offloaded to S3 is read back, as a worker does
        try:
            return {"MessageId": message.message_id, "Result": self._run(message)}
        finally:
            if pointer is not None and self._payloads is not None:
                self._payloads.delete(*pointer)  # as a worker's delete would: the object served its one run

    def get_attributes(self) -> dict[str, str]:
        return {}

    def _nothing_queued(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(f"eager mode: {self.url} has no queue here (submit runs tasks inline), "
                                 "so there is nothing to receive, purge or count")

    receive = purge = change_visibility = delete = _nothing_queued

    def close(self) -> None:
        pass


def received_copy(entry: SendEntry) -> LocalMessage:
    """The message a worker would receive for ``entry``: its body and attributes, attempt 1."""
    now = str(int(time.time() * 1000))
    return LocalMessage(entry.body, {"ApproximateReceiveCount": "1", "SentTimestamp": now,
                                     "ApproximateFirstReceiveTimestamp": now, "SenderId": "eager"},
                        entry.message_attributes, message_id=str(uuid.uuid4()))
