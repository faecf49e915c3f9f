"""Where a message goes after its last attempt: the queue's redrive policy, an explicit DLQ, or nowhere.

* The queue has a redrive policy: hand the message back (visibility 0); SQS
  moves it to its dead-letter queue once ``maxReceiveCount`` is passed.
* Else an explicit dead-letter queue (``--dlq URL``): send the same body and
  message attributes there, *then* delete it here. A crash in between leaves a
  duplicate, never a loss.
* Else keep it: hide it for 15 minutes for a later worker, and say so in the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .backends import Message, QueueBackend, SendEntry
from .lease import MAX_BACKOFF, Lease
from .limits import MAX_BATCH_ENTRIES

logger = logging.getLogger(__name__)

#: How long a message bound for an explicit DLQ stays hidden while it is sent there.
DLQ_SEND_VISIBILITY = 60


def redrive_policy(queue: QueueBackend) -> dict[str, Any] | None:
    """The queue's ``RedrivePolicy`` as a dict, or None when it has none."""
    raw = queue.get_attributes().get("RedrivePolicy")
    if not raw:
        return None
    try:
        return dict(json.loads(raw))
    except (TypeError, ValueError):
        return None


def copy_entry(message: Message, entry_id: str = "0") -> SendEntry:
    """A send entry with the message's body and message attributes (what a dead-letter queue must keep)."""
    attributes = {name: {key: value for key, value in attribute.items()
                         if key in ("DataType", "StringValue", "BinaryValue")}
                  for name, attribute in (message.message_attributes or {}).items()}
    group = message.attributes.get("MessageGroupId")
    return SendEntry(message.body, attributes, group_id=group,
                     deduplication_id=message.message_id if group else None, id=entry_id)


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
        try:
            return int(self.policy["maxReceiveCount"]) if self.policy else None
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def visibility(self) -> int:
        """How long to hide a message that reached the end, before :meth:`finish` is called."""
        return {"redrive": 0, "dlq": DLQ_SEND_VISIBILITY, "keep": MAX_BACKOFF}[self.mode]

    def hand_over(self, message: Message) -> str:
        """Release the message into the dead-letter path; returns the action taken (for the log)."""
        if self.mode == "dlq" and self.dlq is not None:
            return self.finish(message)
        Lease(message).release(self.visibility)
        return self.finish(message)

    def finish(self, message: Message) -> str:
        """After a handler released the message with :attr:`visibility`: send it on if that is the mode."""
        if self.mode == "redrive":
            return "handed to redrive"
        if self.mode == "keep":
            return "kept"
        assert self.dlq is not None
        try:
            self.dlq.send(copy_entry(message))
        except Exception as exc:
            logger.error("message %s: sending it to the dead-letter queue %s failed (%s); it stays here",
                         message.message_id, self.dlq.url, exc)
            return "kept"
        try:
            message.delete()
        except Exception as exc:
            logger.error("message %s: sent to the dead-letter queue, but the delete here failed (%s); "
                         "it may be there twice", message.message_id, exc)
        return "dead-lettered"


def redrive(source: QueueBackend, target: QueueBackend, *, visibility_timeout: int = 30,
            limit: int | None = None) -> int:
    """Move messages from ``source`` (a DLQ) back to ``target``: send each, then delete it from the source.

    A crash midway duplicates at worst and never loses. Returns how many were moved;
    stops when a receive comes back empty or after ``limit`` messages.
    """
    moved = 0
    while limit is None or moved < limit:
        count = MAX_BATCH_ENTRIES if limit is None else min(MAX_BATCH_ENTRIES, limit - moved)
        messages = source.receive(count, 0, visibility_timeout)
        if not messages:
            return moved
        entries = [copy_entry(message, str(index)) for index, message in enumerate(messages)]
        result = target.send_batch(entries)
        sent = {entry["Id"] for entry in result["Successful"]}
        for failure in result["Failed"]:
            logger.error("redrive: sending message %s failed (%s); left in %s",
                         messages[int(failure["Id"])].message_id, failure.get("Message"), source.url)
        handles = [message.receipt_handle for index, message in enumerate(messages) if str(index) in sent]
        source.delete_batch(handles)
        moved += len(handles)
        if not handles:
            return moved
    return moved
