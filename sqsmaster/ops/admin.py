"""What the operator's commands do: create, queue status, peek, purge, redrive. The CLI is a thin layer over these.

None of them creates a queue but :func:`create_queue`: each raises QueueDoesNotExist for a queue
that does not exist, so a mistyped ``sqlite://`` or ``fq://`` path is an error, not a new queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..backends import QueueBackend, open_queue
from ..consumer import dead_letter_url
from ..errors import ConfigurationError, QueueDoesNotExist
from ..limits import MAX_RECEIVE_MESSAGES, check_visibility_timeout
from ..worker.deadletter import RedriveResult, redrive, redrive_policy

#: How long peeked messages are hidden before they are handed back (visibility 0) at once.
PEEK_VISIBILITY = 10


@dataclass
class Created:
    """What :func:`create_queue` made: the queue's URL (as the server gives it), its dead-letter queue's, and
    whether the queue is new (False: it was there already, with the same attributes)."""

    url: str
    dead_letter_url: str | None
    new: bool


def create_queue(url: str, *, visibility_timeout: int | None = None,
                 max_receive_count: int | None = None) -> Created:
    """Create the queue ``url`` names, as SQS's CreateQueue does (idempotent).

    SQS (``http(s)://``): the name in the URL on its endpoint, with ``visibility_timeout`` and, with
    ``max_receive_count``, a dead-letter queue ``NAME-dlq`` and a redrive policy. ``sqlite://`` and
    ``fq://``: with the options in the URL's query string (the two keywords are refused there: one
    place for a local queue's options). Raises ConfigurationError, QueueError.
    """
    if urlsplit(url).scheme in ("http", "https"):
        from ..backends.sqs import SqsQueue

        if visibility_timeout is not None:
            check_visibility_timeout("visibility_timeout", visibility_timeout)
        sqs = SqsQueue(url)
        try:
            existed = _exists(sqs)
            created = sqs.create(visibility_timeout, max_receive_count)
            policy = redrive_policy(SqsQueue(created, sqs.client))
            dead = dead_letter_url(created, str(policy["deadLetterTargetArn"])) if policy else None
            return Created(created, dead, not existed)
        finally:
            sqs.close()
    if visibility_timeout is not None or max_receive_count is not None:
        raise ConfigurationError("a sqlite:// or fq:// queue takes its options in its URL: "
                                 "?visibility_timeout=60&max_receive_count=3")
    queue = open_queue(url, create=False)
    create = getattr(queue, "create", None)
    if create is None:
        raise ConfigurationError(f"{url}: a mem:// queue lives inside one process and needs no creating")
    try:
        existed = bool(queue.exists())  # type: ignore[attr-defined]
        create()
        return Created(url, queue.dead_letter_url(), not existed)  # type: ignore[attr-defined]
    finally:
        queue.close()


def _exists(queue: QueueBackend) -> bool:
    try:
        queue.get_attributes()
    except QueueDoesNotExist:
        return False
    return True


@dataclass
class QueueStatus:
    """A queue's depth as SQS reports it (approximate), its redrive policy and its DLQ's depth."""

    url: str
    visible: int
    in_flight: int
    delayed: int
    redrive_policy: dict[str, Any] | None
    dead_letter_url: str | None = None
    dead_letter_visible: int | None = None


def _depth(attributes: dict[str, str], name: str) -> int:
    return int(attributes.get(name, "0"))


def queue_status(url: str) -> QueueStatus:
    """Depths of the queue and of its dead-letter queue. Raises QueueDoesNotExist / QueueError."""
    queue = open_queue(url, create=False)
    try:
        attributes = queue.get_attributes()
        policy = redrive_policy(queue)
        status = QueueStatus(url, _depth(attributes, "ApproximateNumberOfMessages"),
                             _depth(attributes, "ApproximateNumberOfMessagesNotVisible"),
                             _depth(attributes, "ApproximateNumberOfMessagesDelayed"), policy)
        if policy and (policy.get("deadLetterTargetUrl") or policy.get("deadLetterTargetArn")):
            # Local queues name their dead-letter queue by URL; SQS only by ARN.
            status.dead_letter_url = str(policy.get("deadLetterTargetUrl")
                                         or dead_letter_url(url, str(policy["deadLetterTargetArn"])))
            dlq = open_queue(status.dead_letter_url, create=False)
            try:
                status.dead_letter_visible = _depth(dlq.get_attributes(), "ApproximateNumberOfMessages")
            finally:
                dlq.close()
        return status
    finally:
        queue.close()


@dataclass
class Peeked:
    message_id: str
    receive_count: int
    body: str


def peek(url: str, count: int = 10, *, force: bool = False) -> list[Peeked]:
    """Up to ``count`` visible messages' bodies, handed back (visibility 0) without deleting them.

    SQS has no true peek: each look is a receive, raises the message's receive
    count, and can push it over a redrive policy's ``maxReceiveCount`` into the
    DLQ. So on a queue with a redrive policy this refuses (ConfigurationError)
    unless ``force``. Messages are hidden for a few seconds while we look.
    """
    queue = open_queue(url, create=False)
    try:
        policy = redrive_policy(queue)
        if policy and not force:
            raise ConfigurationError(
                f"{url} has a redrive policy (maxReceiveCount={policy.get('maxReceiveCount')}): SQS has no true "
                "peek, each look counts as a receive and can push a message into the dead-letter queue; "
                "pass --force to peek anyway")
        return _peek(queue, count)
    finally:
        queue.close()


def _peek(queue: QueueBackend, count: int) -> list[Peeked]:
    seen: dict[str, Peeked] = {}
    handles: list[str] = []
    try:
        while len(seen) < count:
            messages = queue.receive(min(MAX_RECEIVE_MESSAGES, count - len(seen)), 0, PEEK_VISIBILITY)
            if not messages:
                break
            for message in messages:
                handles.append(message.receipt_handle)
                seen.setdefault(message.message_id, Peeked(message.message_id, message.receive_count,
                                                           message.body))
    finally:
        for start in range(0, len(handles), MAX_RECEIVE_MESSAGES):
            queue.change_visibility_batch([(handle, 0) for handle in handles[start:start + MAX_RECEIVE_MESSAGES]])
    return list(seen.values())[:count]


def purge(url: str) -> None:
    """Delete every message in the queue (SQS allows one purge per queue every 60 s)."""
    queue = open_queue(url, create=False)
    try:
        queue.purge()
    finally:
        queue.close()


def redrive_queue(dlq_url: str, to_url: str, limit: int | None = None) -> RedriveResult:
    """Move messages from ``dlq_url`` to ``to_url``, send then delete (see :func:`sqsmaster.worker.deadletter.redrive`).

    Raises ConfigurationError when both URLs name one queue."""
    source, target = open_queue(dlq_url, create=False), open_queue(to_url, create=False)
    try:
        return redrive(source, target, limit=limit)
    finally:
        source.close()
        target.close()
