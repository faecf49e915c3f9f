"""``TaskManager``: the producer and consumer entry point, sqstaskmaster's shape."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from .backends import Message, open_queue
from .consumer import task_generator
from .producer import build_entry, sender_attributes

logger = logging.getLogger(__name__)


class TaskManager:
    """Submit tasks to a queue and receive them.

    :param sqs_url: the queue: ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`` (or any
        SQS-compatible endpoint's queue URL), ``mem://NAME``, or what a registered scheme accepts
    :param notify: ``notify(exception, context=None)``, called for messages that cannot run
    :param queue_constructor: any callable ``url -> queue`` (e.g. :class:`~sqsmaster.LocalQueue`)
    :param sender_name: the ``service_name`` message attribute
    :param client: a boto3 SQS client to use instead of one made from the URL and environment
    """

    def __init__(self, sqs_url: str, notify: Callable[..., None] | None = None,
                 queue_constructor: Callable[[str], Any] | None = None, sender_name: str | None = None,
                 *, client: Any = None) -> None:
        self.url = sqs_url
        self.sender_name = sender_name
        self.queue = open_queue(sqs_url, client=client, queue_constructor=queue_constructor)
        self._notify = notify
        self._attributes = sender_attributes(sender_name, sqs_url)

    def submit(self, task: str, /, **kwargs: Any) -> dict[str, Any]:
        """Send one task. Returns the send response (``{"MessageId": ...}``).

        Raises EncodeError (a kwarg JSON cannot hold), MessageTooLarge (over 1 MiB);
        nothing is sent then.
        """
        response = self.queue.send(build_entry(task, kwargs, self._attributes))
        logger.debug("message %s: submitted task %s", response.get("MessageId"), task)
        return response

    def task_generator(self, wait_time: float = 20, sqs_timeout: float = 20, max_messages: int = 1,
                       *, until_empty: bool = False) -> Iterator[tuple[str, dict[str, Any], Message]]:
        """Yield ``(task, kwargs, message)``; see :func:`sqsmaster.consumer.task_generator`.

        Runs forever unless ``until_empty``. Raises LimitExceeded for a ``wait_time``
        over 20 s or an ``sqs_timeout`` over 12 hours, before any receive.
        """
        return task_generator(self.queue, wait_time=wait_time, sqs_timeout=sqs_timeout,
                              max_messages=max_messages, notify=self.notify, until_empty=until_empty)

    def attributes(self) -> dict[str, str]:
        """The queue's attributes (``ApproximateNumberOfMessages`` and the rest, as strings)."""
        return self.queue.get_attributes()

    def purge(self) -> None:
        """Delete every message in the queue."""
        self.queue.purge()

    def notify(self, exception: BaseException, context: dict[str, Any] | None = None) -> None:
        """Pass a failure to the ``notify`` callback given to the constructor, if any."""
        if self._notify is not None:
            self._notify(exception, context=context)

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> "TaskManager":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
