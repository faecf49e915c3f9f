"""Operator orders, carried out by the worker: what becomes of a killed task's message, and cancelled messages.

A kill (``sqsmaster kill MESSAGE_ID --then ...``) stops the task at its next heartbeat
tick (:meth:`~sqsmaster.supervise.MessageHandler.kill`); its handler then hides the
message for :func:`kill_visibility` and :func:`finish_kill` does the rest: ``release``
(visible again at once), ``dead-letter`` (sent to ``--dlq``, else to the queue's redrive
target, then deleted here: the redrive policy alone would only move it after
``maxReceiveCount`` more receives) or ``delete``. A cancel (``sqsmaster cancel``) is
read when the message is received: :func:`drop_cancelled` deletes it unrun.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..backends import Message, open_bounded_queue
from ..consumer import redrive_target_url
from ..lease import MAX_BACKOFF, Lease
from ..outcomes import Action
from .deadletter import DLQ_SEND_VISIBILITY, DeadLetter
from .events import WorkerEvents
from .receiving import WORKER_READ_TIMEOUT


class CancelRecorder(Protocol):
    """Who records a cancelled message (the worker's :class:`~sqsmaster.worker.attempts.Outcomes`)."""

    def cancelled(self, message: Message) -> None: ...

logger = logging.getLogger("sqsmaster.worker")

#: A received message held unstarted (--prefetch, a batch) has its cancel read again when its turn comes only if it
#: waited this long (s) since it was last read: a cancel reaches it within about this, as a kill reaches a task.
RECHECK_AFTER = 1.0

#: What a kill may do with the message afterwards.
RELEASE, DEAD_LETTER, DELETE = "release", "dead-letter", "delete"


def kill_visibility(then: str | None) -> int:
    """How long a killed task's handler hides its message: 0 to release it, else long enough to send it to
    the dead-letter queue or delete it before another worker could receive it."""
    return 0 if then in (None, RELEASE) else DLQ_SEND_VISIBILITY


def finish_kill(message: Message, then: str | None, dead_letter: DeadLetter) -> Action:
    """After a killed task's handler hid its message for :func:`kill_visibility`: carry out ``then``.
    Returns what became of the message; never raises (failures are logged with the message id)."""
    if then in (None, RELEASE):
        return Action.RELEASED
    if then == DELETE:
        try:
            message.delete()
            return Action.DELETED
        except Exception as exc:
            logger.error("message %s: killed, but its delete failed (%s); it comes back in %ds",
                         message.message_id, exc, DLQ_SEND_VISIBILITY)
            return Action.KEPT
    return _dead_letter(message, dead_letter)


def _dead_letter(message: Message, dead_letter: DeadLetter) -> Action:
    if dead_letter.dlq is not None:
        return dead_letter.finish_to_dlq(message)
    url = redrive_target_url(message.queue.url, dead_letter.policy)
    if url is None:
        Lease(message).release(MAX_BACKOFF)
        logger.warning("message %s: killed, to be dead-lettered, but its queue has no redrive policy and no --dlq "
                       "was given: it stays in the queue, hidden %ds", message.message_id, MAX_BACKOFF)
        return Action.KEPT
    client = None
    try:
        target, client = open_bounded_queue(url, WORKER_READ_TIMEOUT)
        return DeadLetter(dead_letter.queue, target).finish_to_dlq(message)
    except Exception as exc:
        logger.error("message %s: killed, but the dead-letter queue %s could not be reached (%s); it comes back "
                     "in %ds", message.message_id, url, exc, DLQ_SEND_VISIBILITY)
        return Action.KEPT
    finally:
        if client is not None:
            client.close()


def drop_cancelled(messages: list[Message], events: WorkerEvents, outcomes: CancelRecorder) -> list[Message]:
    """The received ``messages`` an operator did not cancel; the cancelled ones are deleted unrun, each
    logged and recorded with the outcome ``cancelled``. The observers answer in a bounded time."""
    cancelled = events.cancelled([message.message_id for message in messages])
    if not cancelled:
        return messages
    for message in messages:
        if message.message_id in cancelled:
            outcomes.cancelled(message)
    return [message for message in messages if message.message_id not in cancelled]
