"""Helpers for testing your handlers without a queue: :class:`LocalMessage`.

A handler's unit test needs a message. sqstaskmaster's tests build one by hand,
``LocalMessage(body, attributes, message_attributes)``; this one takes the same
arguments, behaves as a boto3 ``sqs.Message`` does for a handler, and records what
the handler did with it, so a test can say what became of the message::

    from sqsmaster.testing import LocalMessage

    message = LocalMessage.for_task("Resize", path="images/cat.png", width=640)
    with Resize(message, sqs_timeout=30, alarm_timeout=10, **message.kwargs) as handler:
        handler.run()
    assert message.deleted                      # success deletes
    # a failure hands it back instead: message.visibility_timeouts[-1] is the backoff (1 s on attempt 1)

``unittest.mock.Mock()`` works as a message too (sqstaskmaster users' other habit).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .encoding import encode_task
from .errors import LeaseLost
from .producer import SENDER_ATTRIBUTE

__all__ = ["LocalMessage"]


class LocalMessage:
    """A hand-built message for a handler's unit test, with boto3 ``sqs.Message``'s surface.

    :param body: the message body (``LocalMessage.for_task`` encodes a task call for you)
    :param attributes: system attributes (``{"ApproximateReceiveCount": "3"}`` to test attempt 3's backoff)
    :param message_attributes: message attributes (``service_name``...)
    :param message_id: default a new UUID
    :param receipt_handle: default one derived from the message id

    ``change_visibility(VisibilityTimeout=n)`` and ``delete()`` make no call: they record
    ``n`` in :attr:`visibility_timeouts` and set :attr:`deleted`. As on SQS, deleting twice
    succeeds, and changing the visibility of a deleted message raises
    :class:`~sqsmaster.errors.LeaseLost` (``ReceiptHandleIsInvalid``).
    """

    def __init__(self, body: str, attributes: dict[str, str] | None = None,
                 message_attributes: dict[str, dict[str, Any]] | None = None, *, message_id: str | None = None,
                 receipt_handle: str | None = None) -> None:
        self.body = body
        self.attributes: dict[str, str] = dict(attributes or {})
        self.message_attributes: dict[str, dict[str, Any]] = dict(message_attributes or {})
        self.message_id = message_id or str(uuid.uuid4())
        self.receipt_handle = receipt_handle or f"local-receipt-{self.message_id}"
        #: Each ``VisibilityTimeout`` the handler set, in order: the lease it took, heartbeats, the hand-back.
        self.visibility_timeouts: list[int] = []
        #: True once the handler deleted the message (its task succeeded).
        self.deleted = False

    @classmethod
    def for_task(cls, task: str, /, **kwargs: Any) -> "LocalMessage":
        """The message ``TaskManager.submit(task, **kwargs)`` sends, as first received.

        The body is encoded exactly as a producer encodes it (so a kwarg JSON cannot hold raises
        EncodeError here too); :attr:`kwargs` is what a consumer decodes from it. For a later
        attempt, set ``message.attributes["ApproximateReceiveCount"] = "3"``.
        """
        now = str(int(time.time() * 1000))
        return cls(encode_task(task, kwargs),
                   {"ApproximateReceiveCount": "1", "SentTimestamp": now,
                    "ApproximateFirstReceiveTimestamp": now, "SenderId": "local"},
                   {SENDER_ATTRIBUTE: {"DataType": "String", "StringValue": "sqsmaster.testing"}})

    @property
    def kwargs(self) -> dict[str, Any]:
        """The task's keyword arguments as a consumer decodes them from the body (dates are strings)."""
        return dict(json.loads(self.body)["kwargs"])

    def change_visibility(self, VisibilityTimeout: int) -> None:  # noqa: N803 (boto3's name)
        """Record the new visibility; raises LeaseLost once the message was deleted."""
        if self.deleted:
            raise LeaseLost(self.message_id, "ReceiptHandleIsInvalid", "the message was deleted")
        self.visibility_timeouts.append(int(VisibilityTimeout))

    def delete(self) -> None:
        """Record the delete (idempotent, as on SQS)."""
        self.deleted = True

    def __repr__(self) -> str:
        return (f"LocalMessage(id={self.message_id!r}, body={self.body[:60]!r}, deleted={self.deleted}, "
                f"visibility_timeouts={self.visibility_timeouts})")
