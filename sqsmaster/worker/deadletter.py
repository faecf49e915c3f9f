"""Where a message goes after its last attempt: the queue's redrive policy, an explicit DLQ, or nowhere.

* The queue has a redrive policy: hand the message back (visibility 0); SQS
  moves it to its dead-letter queue once ``maxReceiveCount`` is passed.
* Else an explicit dead-letter queue (``--dlq URL``): send the same body and
  message attributes there, *then* delete it here. A crash in between leaves a
  duplicate, never a loss.
* Else keep it: hide it for 15 minutes for a later worker, and say so in the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..backends import Message, QueueBackend
from ..consumer import max_receive_count, redrive_policy
from ..errors import ConfigurationError
from ..lease import MAX_BACKOFF, Lease
from ..limits import MAX_BATCH_ENTRIES
from ..outcomes import Action
from ..producer import copy_entry

__all__ = ["DeadLetter", "RedriveResult", "copy_entry", "redrive", "redrive_policy", "same_queue"]

logger = logging.getLogger(__name__)

#: How long a message bound for an explicit DLQ stays hidden while it is sent there.
DLQ_SEND_VISIBILITY = 60


class DeadLetter:
    """The dead-letter path for one source queue. ``mode`` is ``redrive``, ``dlq`` or ``keep``."""

    def __init__(self, queue: QueueBackend, dlq: QueueBackend | None = None) -> None:
        self.queue = queue
        self.dlq = dlq
        self.policy = redrive_policy(queue)
        self.mode = "redrive" if self.policy else "dlq" if dlq is not None else "keep"

    @property
    def max_receive_count(self) -> int | None:
        """The redrive policy's ``maxReceiveCount``: the receive after it moves the message (None: no policy)."""
        return max_receive_count(self.policy)

    def moves_after(self, attempt: int) -> bool:
        """True when the redrive policy moves the message at its next receive: ``attempt`` was its last."""
        limit = self.max_receive_count
        return self.mode == "redrive" and limit is not None and attempt >= limit

    @property
    def visibility(self) -> int:
        """How long to hide a message that reached the end, before :meth:`finish` is called."""
        return {"redrive": 0, "dlq": DLQ_SEND_VISIBILITY, "keep": MAX_BACKOFF}[self.mode]

    def hand_over(self, message: Message) -> Action:
        """Release the message into the dead-letter path; returns the action taken (for the log)."""
        if self.mode == "dlq" and self.dlq is not None:
            return self.finish(message)
        Lease(message).release(self.visibility)
        return self.finish(message)

    def finish(self, message: Message) -> Action:
        """After a handler released the message with :attr:`visibility`: send it on if that is the mode."""
        if self.mode == "redrive":
            return Action.HANDED_TO_REDRIVE
        if self.mode == "keep":
            return Action.KEPT
        return self.finish_to_dlq(message)

    def finish_to_dlq(self, message: Message) -> Action:
        """Send the message to :attr:`dlq` (which must be set), then delete it here; KEPT if the send failed."""
        assert self.dlq is not None
        try:
            self.dlq.send(copy_entry(message))
        except Exception as exc:
            logger.error("message %s: sending it to the dead-letter queue %s failed (%s); it stays here",
                         message.message_id, self.dlq.url, exc)
            return Action.KEPT
        try:
            message.delete()
        except Exception as exc:
            logger.error("message %s: sent to the dead-letter queue, but the delete here failed (%s); "
                         "it may be there twice", message.message_id, exc)
        return Action.DEAD_LETTERED


#: Wait of each receive of a redrive (s): any long poll makes SQS look on every server, where a short
#: poll samples a few and can come back empty while messages remain.
REDRIVE_WAIT_TIME = 2
#: Empty long polls in a row a redrive accepts while the source still reports visible messages (a FIFO
#: group held by a message in flight elsewhere cannot be received) before it stops and says so.
MAX_EMPTY_DISAGREEMENTS = 5


@dataclass
class RedriveResult:
    """What a redrive did: ``moved`` messages sent to the target and deleted from the source; ``failed``
    could not be sent (left in the source, visible again after the visibility timeout); ``left`` is what
    the source still held at the end (in flight elsewhere, delayed, or not receivable)."""

    moved: int = 0
    failed: int = 0
    left: int = 0


def _normalised(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}/{path.rstrip('/')}"


def _location(queue: QueueBackend) -> tuple[str, str | None] | None:
    """Where a local queue lives on disk (``sqlite://``: its file and name; ``fq://``: its directory)."""
    path = getattr(queue, "path", None) or getattr(queue, "directory", None)
    return None if path is None else (os.path.realpath(str(path)), getattr(queue, "name", None))


def same_queue(first: QueueBackend, second: QueueBackend) -> bool:
    """True when both name one queue: the same URL, the same file or directory on disk (a path spelt two
    ways), or the same ``QueueArn`` (SQS has several URL forms for one queue)."""
    if _normalised(first.url) == _normalised(second.url):
        return True
    locations = [_location(queue) for queue in (first, second)]
    if locations[0] is not None and locations[0] == locations[1]:
        return True
    arns = [queue.get_attributes().get("QueueArn") for queue in (first, second)]
    return arns[0] is not None and arns[0] == arns[1]


def _counts(queue: QueueBackend) -> tuple[int, int]:
    attributes = queue.get_attributes()
    visible = int(attributes.get("ApproximateNumberOfMessages", "0"))
    hidden = sum(int(attributes.get(name, "0")) for name in ("ApproximateNumberOfMessagesNotVisible",
                                                             "ApproximateNumberOfMessagesDelayed"))
    return visible, hidden


def redrive(source: QueueBackend, target: QueueBackend, *, visibility_timeout: int = 30,
            limit: int | None = None, wait_time: int = REDRIVE_WAIT_TIME) -> RedriveResult:
    """Move messages from ``source`` (a DLQ) to ``target``: send each, then delete it from the source.

    A crash midway duplicates at worst and never loses. Receives are long polls, and the
    redrive ends only when one comes back empty *and* the source reports no visible message
    (or after ``limit`` messages). Raises ConfigurationError when both are one queue (the
    redrive would never end).
    """
    if same_queue(source, target):
        raise ConfigurationError(f"the redrive source and destination are the same queue ({source.url}); "
                                 "give the dead-letter queue and the queue to move its messages to")
    result, disagreements = RedriveResult(), 0
    while limit is None or result.moved < limit:
        count = MAX_BATCH_ENTRIES if limit is None else min(MAX_BATCH_ENTRIES, limit - result.moved)
        messages = source.receive(count, wait_time, visibility_timeout)
        if not messages:
            visible, _ = _counts(source)
            disagreements += 1
            if visible == 0 or disagreements >= MAX_EMPTY_DISAGREEMENTS:
                break
            continue
        disagreements = 0
        entries = [copy_entry(message, str(index)) for index, message in enumerate(messages)]
        sent = {entry["Id"] for entry in target.send_batch(entries)["Successful"]}
        for index, message in enumerate(messages):
            if str(index) not in sent:
                logger.error("redrive: sending message %s to %s failed; it stays in %s", message.message_id,
                             target.url, source.url)
        moved = [message for index, message in enumerate(messages) if str(index) in sent]
        for entry in source.delete_batch([message.receipt_handle for message in moved]):
            logger.error("redrive: message %s was sent, but its delete from %s failed (%s): it may come "
                         "through twice", moved[int(entry["Id"])].message_id, source.url, entry.get("Message"))
        result.moved += len(moved)
        result.failed += len(messages) - len(moved)
    visible, hidden = _counts(source)
    result.left = visible + hidden
    return result
