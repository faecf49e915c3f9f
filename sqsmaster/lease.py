"""The lease on a received message: extend it, hand it back, delete it, and notice when it is lost.

A lease is the time SQS keeps a message hidden for us. :class:`Lease` extends it
(never past SQS's 12-hour cap counted from receipt), notices when it is lost, and
hands the message back. Every call it makes is bounded: it goes through the
queue's ``heartbeat_queue(timeout)``, a twin with a client (or connection) of its
own that waits at most ``timeout`` for an answer (half that to connect; a bounded
busy wait for sqlite://) and makes no hidden retries, so no network state can hold
a caller much longer than that.

A message is treated strictly as a boto3 ``sqs.Message``: ``body``, ``attributes``,
``message_attributes``, ``message_id``, ``receipt_handle``, ``change_visibility``,
``delete``. sqsmaster's own extras (``queue``, ``received_at``, ``visibility_timeout``)
are used only when they have the right type, so a ``unittest.mock.Mock()`` works too.
A boto3 resource message (``boto3.resource("sqs")``) is called through a twin of its
client with the same bounded timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Callable

from .backends import QueueBackend
from .errors import LEASE_LOST_CODES, LeaseLost, QueueError
from .limits import MAX_BATCH_ENTRIES, MAX_VISIBILITY_TIMEOUT

logger = logging.getLogger(__name__)

#: Longest retry backoff: SQS's longest per-message delay.
MAX_BACKOFF = 900
#: Bound (s) on one lease call made outside a handler (rejects, delays, dead letters).
DEFAULT_CALL_TIMEOUT = 10.0
#: Bound (s) on handing a message back when a task ends: the ``with`` block must end soon after a deadline.
RELEASE_TIMEOUT = 1.0
#: The code :func:`change_visibilities` gives a change whose call got no answer (it timed out, the
#: connection dropped): it may have been done at the server all the same.
NO_ANSWER = "NoAnswer"
#: The bounds a twin is made for (s): a call's bound is rounded down to one of them, so a worker
#: keeps a handful of twin clients, not one per distinct timeout.
CALL_TIMEOUT_STEPS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)


def default_backoff(receive_count: int) -> int:
    """Seconds to hide a failed message before its next attempt: ``min(2**(n-1), 900)``."""
    return int(min(2 ** max(receive_count - 1, 0), MAX_BACKOFF))


def system_attributes(message: Any) -> Mapping[str, Any]:
    """The message's ``attributes`` when it is a mapping (a Mock's is not), else an empty dict."""
    attributes = getattr(message, "attributes", None)
    return attributes if isinstance(attributes, Mapping) else {}


def notify_context(message: Any) -> dict[str, Any]:
    """What ``notify`` receives as ``context``: sqstaskmaster's ``{"body": ..., **attributes}``, plus
    ``"message_id"`` when the message has one (a str; a ``Mock()``'s is not, so a handler test written
    for sqstaskmaster that compares the whole context still passes)."""
    context: dict[str, Any] = {"body": getattr(message, "body", None)}
    message_id = getattr(message, "message_id", None)
    if isinstance(message_id, str):
        context["message_id"] = message_id
    context.update(system_attributes(message))
    return context


def receive_count(message: Any) -> int:
    """The message's ``ApproximateReceiveCount`` (1 when unknown)."""
    value = system_attributes(message).get("ApproximateReceiveCount", 1)
    try:
        return max(int(value), 1) if isinstance(value, (str, int)) else 1
    except ValueError:
        return 1


def message_id_of(message: Any) -> str | None:
    """The message's id as a string (None when it has none)."""
    value = getattr(message, "message_id", None)
    return value if value is None or isinstance(value, str) else str(value)


def bounded(timeout: float) -> float:
    """``timeout`` rounded down to one of :data:`CALL_TIMEOUT_STEPS` (the smallest at least)."""
    return max([step for step in CALL_TIMEOUT_STEPS if step <= timeout] or [CALL_TIMEOUT_STEPS[0]])


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_boto3_resource(message: Any) -> bool:
    try:
        from boto3.resources.base import ServiceResource
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    return isinstance(message, ServiceResource)


_twin_lock = threading.Lock()
_resource_twins: "weakref.WeakKeyDictionary[Any, dict[float, Any]]" = weakref.WeakKeyDictionary()


def _resource_queue(message: Any, timeout: float) -> QueueBackend:
    """A bounded SqsQueue on the queue of a boto3 resource message, through a twin of its client."""
    from .backends.sqs import SqsQueue, twin_client

    client = message.meta.client
    with _twin_lock:
        twins = _resource_twins.setdefault(client, {})
        if timeout not in twins:
            twins[timeout] = twin_client(client, timeout)
        twin = twins[timeout]
    return SqsQueue(message.queue_url, twin)


def _as_queue_error(exc: Exception, message_id: str | None, operation: str) -> QueueError:
    """An error raised by a message's own method, as the backends raise it (LeaseLost or QueueError)."""
    if isinstance(exc, QueueError):
        return exc
    response = getattr(exc, "response", None)
    code = (response if isinstance(response, dict) else {}).get("Error", {}).get("Code")
    response = response if isinstance(response, dict) and code is not None else None
    if code in LEASE_LOST_CODES:
        return LeaseLost(message_id, str(code), str(exc), response=response, operation=operation)
    return QueueError(f"message {message_id}: {operation} failed: {type(exc).__name__}: {exc}",
                      code=None if code is None else str(code), response=response, operation=operation)


class Lease:
    """Our hold on one message: extend, release, delete; remembers whether it was lost.

    ``call_timeout`` bounds each call (s). After :meth:`retire` the results of calls
    still in flight (a heartbeat abandoned on a frozen endpoint) are ignored.
    """

    def __init__(self, message: Any, clock: Callable[[], float] = time.monotonic,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.message = message
        self.message_id = message_id_of(message)
        self.call_timeout = call_timeout
        self._clock = clock
        self.received_at: float = _number(getattr(message, "received_at", None)) or clock()
        #: The visibility the receive set (None when unknown, e.g. a boto3 message).
        self.received_visibility: float | None = _number(getattr(message, "visibility_timeout", None))
        self.expires_at: float | None = (None if self.received_visibility is None
                                         else self.received_at + self.received_visibility)
        self.lost = False
        self.extensions = 0
        self.failed_extensions = 0
        self._retired = False

    def remaining(self) -> float | None:
        """Seconds left on the lease as far as we know (None when the receive did not say)."""
        return None if self.expires_at is None else self.expires_at - self._clock()

    def _queue(self, timeout: float) -> QueueBackend | None:
        """The bounded twin to call through; None for a message we can only call directly (a Mock)."""
        queue = getattr(self.message, "queue", None)
        if isinstance(queue, QueueBackend):
            return queue.heartbeat_queue(timeout=bounded(timeout))
        if _is_boto3_resource(self.message):
            return _resource_queue(self.message, bounded(timeout))
        return None

    def prepare(self, *timeouts: float) -> None:
        """Make the twin clients for ``call_timeout`` and ``timeouts`` now (the first one a process makes
        loads botocore's SQS model: about half a second), so no later call waits for that. Never raises."""
        for timeout in (self.call_timeout, *timeouts):
            try:
                self._queue(timeout)
            except Exception as exc:  # the call itself will fail the same way, and be handled there
                logger.warning("message %s: could not make a client for heartbeats (%s)", self.message_id, exc)

    def change_visibility(self, seconds: int, timeout: float | None = None) -> None:
        """Set the message's visibility; raises LeaseLost when the handle no longer holds it, QueueError else."""
        queue = self._queue(timeout or self.call_timeout)
        if queue is not None:
            queue.change_visibility(self.message.receipt_handle, seconds, message_id=self.message_id)
            return
        try:
            self.message.change_visibility(VisibilityTimeout=seconds)
        except Exception as exc:
            raise _as_queue_error(exc, self.message_id, "change_visibility") from exc

    def take(self, seconds: float) -> None:
        """Hide the message ``seconds`` from now before a task starts; raises LeaseLost or QueueError."""
        self.change_visibility(int(seconds))
        self.expires_at = self._clock() + seconds

    def extend(self, seconds: float) -> bool:
        """Hide the message ``seconds`` more from now, capped at 12 hours from receipt.

        Returns True on success. A lost lease is logged loudly and remembered; any
        other failure is logged and left for the next heartbeat to retry. Never raises.
        """
        if self.lost or self._retired:
            return False
        now = self._clock()
        timeout = int(min(seconds, MAX_VISIBILITY_TIMEOUT - (now - self.received_at)))
        if timeout <= 0:
            logger.error("message %s: the 12-hour visibility cap since receipt is reached; "
                         "SQS will redeliver it while the task runs", self.message_id)
            return False
        try:
            self.change_visibility(timeout)
        except LeaseLost as exc:
            if not self._retired:
                self.lost = True
                logger.error("message %s: LEASE LOST (%s): it is no longer ours and may already run elsewhere; "
                             "heartbeats stop", self.message_id, exc.code)
            return False
        except Exception as exc:
            if not self._retired:
                self.failed_extensions += 1
                logger.warning("message %s: extending visibility by %ss failed (%s); retrying",
                               self.message_id, timeout, exc)
            return False
        if self._retired:
            return False
        self.extensions += 1
        self.expires_at = now + timeout
        logger.debug("message %s: visibility extended by %ss", self.message_id, timeout)
        return True

    def release(self, delay: int, timeout: float | None = None) -> bool:
        """Hand the message back, visible again after ``delay`` seconds. Never raises.

        A release that cannot be made within ``timeout`` (default ``call_timeout``) is
        logged: the message then comes back when its visibility expires.
        """
        if self.lost:
            logger.warning("message %s: not released, the lease was lost", self.message_id)
            return False
        try:
            self.change_visibility(int(min(delay, MAX_VISIBILITY_TIMEOUT)), timeout)
        except Exception as exc:
            logger.warning("message %s: release failed (%s); it comes back when its visibility expires",
                           self.message_id, exc)
            return False
        return True

    def delete(self) -> None:
        """Delete the message (acknowledge success), bounded like every call. Raises what the queue raises."""
        queue = self._queue(self.call_timeout)
        if queue is None:
            self.message.delete()
            return
        queue.delete(self.message.receipt_handle, message_id=self.message_id)
        mark_deleted = getattr(self.message, "mark_deleted", None)
        if callable(mark_deleted):
            mark_deleted()  # sqsmaster's Message: runs its after_delete callbacks (S3 payloads)

    def retire(self) -> None:
        """The task is over: results of heartbeat calls still in flight are ignored from now on."""
        self._retired = True


def change_visibilities(entries: list[tuple[Any, int]], timeout: float) -> dict[Any, tuple[str, str]]:
    """Set the visibility of several received messages: ``(message, seconds)`` pairs, ten to a
    ChangeMessageVisibilityBatch per queue, each call bounded by ``timeout`` (through the queue's
    ``heartbeat_queue``, a client of its own). Returns the messages whose change failed, with (SQS error
    code, reason); a lost lease shows as one of :data:`~sqsmaster.errors.LEASE_LOST_CODES`, a call that got no
    answer (and may have been done) as :data:`NO_ANSWER`. Never raises."""
    failed: dict[Any, tuple[str, str]] = {}
    by_queue: dict[int, tuple[QueueBackend, list[tuple[Any, int]]]] = {}
    for message, seconds in entries:
        by_queue.setdefault(id(message.queue), (message.queue, []))[1].append((message, seconds))
    for queue, pairs in by_queue.values():
        try:
            twin = queue.heartbeat_queue(timeout=bounded(timeout))
        except Exception as exc:
            failed.update((message, (type(exc).__name__, str(exc))) for message, _ in pairs)
            continue
        for start in range(0, len(pairs), MAX_BATCH_ENTRIES):
            chunk = pairs[start:start + MAX_BATCH_ENTRIES]
            try:
                errors = twin.change_visibility_batch([(m.receipt_handle, seconds) for m, seconds in chunk])
            except Exception as exc:
                code = NO_ANSWER if isinstance(exc, QueueError) and exc.code is None else type(exc).__name__
                failed.update((message, (code, str(exc))) for message, _ in chunk)
                continue
            for error in errors:
                message = chunk[int(error["Id"])][0]
                failed[message] = (str(error.get("Code")), str(error.get("Message") or error.get("Code")))
    return failed
