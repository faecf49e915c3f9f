"""Consuming: receive messages and decode them into ``(task, kwargs, message)``."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from .backends import Message, QueueBackend
from .encoding import decode_task
from .errors import MalformedMessage
from .lease import Lease, default_backoff
from .limits import check_max_messages, check_visibility_timeout, check_wait_time

logger = logging.getLogger(__name__)

Notify = Callable[[BaseException, "dict[str, Any] | None"], None]


def reject(message: Message, error: BaseException, notify: Notify | None) -> None:
    """Report a message that cannot run and hand it back with a backoff.

    It is never deleted: after the queue's ``maxReceiveCount`` receives, SQS's
    redrive policy moves it to the dead-letter queue, where it can be inspected.
    """
    context = {"body": message.body, "message_id": message.message_id, **message.attributes}
    if notify is not None:
        try:
            notify(error, context)
        except Exception:
            logger.exception("message %s: notify() itself failed", message.message_id)
    logger.error("message %s: rejected: %s (receive count %d); left for the redrive policy",
                 message.message_id, error, message.receive_count)
    Lease(message).release(default_backoff(message.receive_count))


def queue_is_empty(queue: QueueBackend) -> bool:
    """True when the queue reports no visible, in-flight or delayed message."""
    attributes = queue.get_attributes()
    return all(int(attributes.get(name, "0")) == 0 for name in (
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))


def task_generator(queue: QueueBackend, *, wait_time: float = 20, sqs_timeout: float = 20, max_messages: int = 1,
                   notify: Notify | None = None, until_empty: bool = False,
                   ) -> Iterator[tuple[str, dict[str, Any], Message]]:
    """Receive forever, yielding ``(task, kwargs, message)`` for each well-formed message.

    With ``until_empty`` it returns once a receive comes back empty and the queue
    reports no visible, in-flight or delayed message (a batch job's "drain").

    Each receive hides its messages for ``sqs_timeout`` seconds. Malformed bodies
    are reported through ``notify`` and handed back with a backoff (see :func:`reject`);
    the loop goes on. Queue errors propagate.
    """
    wait = check_wait_time(wait_time)
    visibility = check_visibility_timeout("sqs_timeout", sqs_timeout)
    count = check_max_messages(max_messages)
    while True:
        messages = queue.receive(count, wait, visibility)
        if not messages:
            logger.debug("no message on %s after %ss", queue.url, wait)
            if until_empty and queue_is_empty(queue):
                return
        for message in messages:
            try:
                task, kwargs = decode_task(message.body, message.message_id)
            except MalformedMessage as exc:
                reject(message, exc, notify)
                continue
            logger.debug("message %s: received task %s (attempt %d)", message.message_id, task,
                         message.receive_count)
            yield task, kwargs, message
