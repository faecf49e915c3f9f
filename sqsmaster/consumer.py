"""Consuming: receive messages and decode them into ``(task, kwargs, message)``.

Everything between the receive and the task is the *poison path* (:func:`read_message`):
the due time, the S3 payload pointer, the body. Whatever a message carries, it ends
there as ready to run, waiting (not due), or refused with its message id
(:class:`MalformedMessage` never runs; :class:`QueueError`, a payload that cannot be
fetched now, is retried with a backoff); and a bug of ours on that path hands the
message back (:func:`release_after_error`) instead of taking the consumer down.
``task_generator`` and the worker share it.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from .backends import Message, QueueBackend
from .delays import hold_if_not_due
from .encoding import decode_task
from .errors import ConfigurationError, MalformedMessage, QueueError
from .lease import Lease, default_backoff, notify_context, receive_count
from .limits import check_max_messages, check_visibility_timeout, check_wait_time
from .ordering import GroupOrder
from .payloads import PayloadStore, resolve_payload
from .prefetch import PendingLeases

logger = logging.getLogger(__name__)

Notify = Callable[..., None]  # notify(exception, context=None)


def reject(message: Message, error: BaseException, notify: Notify | None) -> None:
    """Report a message that cannot run and hand it back with a backoff.

    It is never deleted: after the queue's ``maxReceiveCount`` receives, SQS's
    redrive policy moves it to the dead-letter queue, where it can be inspected.
    """
    attempt = receive_count(message)
    context = notify_context(message)
    if notify is not None:
        try:
            notify(error, context=context)
        except Exception:
            logger.exception("message %s: notify() itself failed", message.message_id)
    logger.error("message %s: rejected: %s (receive count %d); left for the redrive policy",
                 message.message_id, error, attempt)
    Lease(message).release(default_backoff(attempt))


def release_after_error(message: Any, error: BaseException) -> None:
    """A bug of ours (not the message's) hit ``message`` before its task ran: log it and hand the
    message back with a backoff, so it is neither lost for its visibility timeout nor the end of
    the consumer. Never raises."""
    message_id = getattr(message, "message_id", None)
    try:
        logger.error("message %s: internal error before its task ran (%s: %s); handed back for a retry",
                     message_id, type(error).__name__, error, exc_info=(type(error), error, error.__traceback__))
        Lease(message).release(default_backoff(receive_count(message)))
    except Exception:  # the last line of defence must not raise (interrupts still propagate)
        pass


def queue_is_empty(queue: QueueBackend) -> bool:
    """True when the queue reports no visible, in-flight or delayed message."""
    attributes = queue.get_attributes()
    return all(int(attributes.get(name, "0")) == 0 for name in (
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))


def redrive_policy(queue: QueueBackend) -> dict[str, Any] | None:
    """The queue's ``RedrivePolicy`` as a dict, or None when it has none."""
    raw = queue.get_attributes().get("RedrivePolicy")
    if not raw:
        return None
    try:
        return dict(json.loads(raw))
    except (TypeError, ValueError):
        return None


def dead_letter_url(url: str, arn: str) -> str:
    """The queue URL of a dead-letter queue named by ARN, on the same endpoint as ``url``."""
    parts = arn.split(":")
    if len(parts) < 6:
        raise ConfigurationError(f"not a queue ARN: {arn!r}")
    account, name = parts[4], parts[5]
    split = urlsplit(url)
    if split.scheme in ("http", "https"):
        return f"{split.scheme}://{split.netloc}/{account}/{name}"
    return f"{split.scheme}://{name}"


def redrive_target_url(url: str, policy: dict[str, Any] | None) -> str | None:
    """The URL of the queue a redrive policy moves messages to (None without a policy or a target)."""
    if not policy:
        return None
    if policy.get("deadLetterTargetUrl"):  # local queues say it: they cannot be found from an ARN
        return str(policy["deadLetterTargetUrl"])
    return dead_letter_url(url, str(policy["deadLetterTargetArn"])) if policy.get("deadLetterTargetArn") else None


def max_receive_count(policy: dict[str, Any] | None) -> int | None:
    """A redrive policy's ``maxReceiveCount``: the receive after it moves the message (None: no policy)."""
    try:
        return int(policy["maxReceiveCount"]) if policy else None
    except (KeyError, TypeError, ValueError):
        return None


def read_message(message: Message, payloads: PayloadStore | None = None,
                 max_receive_count: int | None = None) -> tuple[str, dict[str, Any]] | None:
    """The poison path: ``(task, kwargs)`` of a received message, or None when it is not due yet.

    None means the message was handed back (or re-sent) to wait until due (see
    :mod:`sqsmaster.delays`; ``max_receive_count`` is the queue's redrive policy, when
    known). An S3 pointer is replaced by the stored body, deleted once the message is.
    Raises :class:`MalformedMessage` (a bad due time, pointer or body: it never runs) or
    :class:`QueueError` (its payload cannot be fetched now). Any other exception is a bug
    of ours: callers hand the message back with :func:`release_after_error`.
    """
    if hold_if_not_due(message, max_receive_count=max_receive_count):
        return None
    resolve_payload(message, payloads)
    return decode_task(message.body, message.message_id)


def prepare_message(message: Message, notify: Notify | None = None, payloads: PayloadStore | None = None,
                    max_receive_count: int | None = None) -> tuple[str, dict[str, Any]] | None:
    """Ready a received message to run: ``(task, kwargs)``, or None when it must not run now.

    None means the message was already dealt with: not due yet (handed back until
    it is, see :mod:`sqsmaster.delays`), malformed or its S3 payload unreadable
    (reported and handed back with a backoff, see :func:`reject`), or hit by a bug
    of ours (handed back, see :func:`release_after_error`). Never raises.
    """
    try:
        prepared = read_message(message, payloads, max_receive_count)
    except (MalformedMessage, QueueError) as exc:
        reject(message, exc, notify)
        return None
    except Exception as exc:
        release_after_error(message, exc)
        return None
    if prepared is not None:
        logger.debug("message %s: received task %s (attempt %d)", message.message_id, prepared[0],
                     receive_count(message))
    return prepared


def task_generator(queue: QueueBackend, *, wait_time: float = 20, sqs_timeout: float = 20, max_messages: int = 1,
                   notify: Notify | None = None, until_empty: bool = False, payloads: PayloadStore | None = None,
                   ) -> Iterator[tuple[str, dict[str, Any], Message]]:
    """Receive forever, yielding ``(task, kwargs, message)`` for each well-formed message.

    With ``until_empty`` it returns once a receive comes back empty and the queue
    reports no visible, in-flight or delayed message (a batch job's "drain").

    Each receive hides its messages for ``sqs_timeout`` seconds. The worker's poison path
    (:func:`read_message`): malformed bodies are reported through ``notify`` and handed back
    with a backoff for the queue's redrive policy (see :func:`reject`); the loop goes on.
    Queue errors propagate. Messages not due yet are handed back until they are (re-sent
    before the redrive policy would count the hops), S3 payloads are fetched. With
    ``max_messages`` > 1, the messages of a receive that wait their turn are kept hidden by
    a heartbeat every third of ``sqs_timeout`` (as the worker's ``--prefetch``), and handed
    back at once when the loop ends early (``close()``, ``break``, an exception). On a FIFO
    queue, when a message is not deleted by the time the loop resumes (it failed), the later
    messages of its group from the same receive are released unrun (:class:`GroupOrder`).
    """
    wait = check_wait_time(wait_time)
    visibility = check_visibility_timeout("sqs_timeout", sqs_timeout)
    count = check_max_messages(max_messages)
    if payloads is None:  # one S3 client for the generator, made on the first pointer, not one per message
        payloads = PayloadStore("s3://payloads", queue_url=queue.url)
    try:
        redrive_after = max_receive_count(redrive_policy(queue))
    except QueueError as exc:  # a consumer may lack sqs:GetQueueAttributes: due times then hold as before
        logger.warning("cannot read the redrive policy of %s (%s): a long due time may count as receives",
                       queue.url, exc)
        redrive_after = None
    waiting = PendingLeases(int(visibility), max(visibility / 3, 0.5))
    try:
        while True:
            messages = queue.receive(count, wait, visibility)
            if not messages:
                logger.debug("no message on %s after %ss", queue.url, wait)
                if until_empty and queue_is_empty(queue):
                    return
            waiting.add(messages[1:])
            order = GroupOrder()
            for message in itertools.chain(messages[:1], iter(waiting.pop, None)):  # popped one by one
                yield from _admitted(message, order, notify, payloads, redrive_after)
    finally:
        waiting.close()


def _admitted(message: Message, order: GroupOrder, notify: Notify | None, payloads: PayloadStore | None,
              redrive_after: int | None) -> Iterator[tuple[str, dict[str, Any], Message]]:
    if not order.admit(message):
        return
    prepared = prepare_message(message, notify, payloads, redrive_after)
    if prepared is None:
        order.settle(message, succeeded=False)
        return
    yield prepared[0], prepared[1], message
    order.settle(message, succeeded=getattr(message, "deleted", False))
