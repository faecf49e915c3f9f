"""The lease on a received message, and the heartbeat/timeout policy both isolation modes share.

A lease is the time SQS keeps a message hidden for us. :class:`Lease` extends
it (never past SQS's 12-hour cap counted from receipt), notices when it is lost,
and hands the message back. :class:`HeartbeatPolicy` decides, at each tick,
whether the task is past its hard timeout, stuck, or due a heartbeat; the
signal supervisor calls it from SIGALRM, the process supervisor from its loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .errors import LEASE_LOST_CODES, ConfigurationError, HardTimeoutExceeded, LeaseLost, TaskAbandoned, TaskStuck
from .limits import MAX_VISIBILITY_TIMEOUT

logger = logging.getLogger(__name__)

#: Longest retry backoff: SQS's longest per-message delay.
MAX_BACKOFF = 900
#: After a failed heartbeat, try again this soon (seconds) instead of a full alarm period.
HEARTBEAT_RETRY_DELAY = 1.0
#: What a task does once its lease is lost: run on to its end, or be stopped.
ON_LEASE_LOST = ("continue", "stop")


def default_backoff(receive_count: int) -> int:
    """Seconds to hide a failed message before its next attempt: ``min(2**(n-1), 900)``."""
    return int(min(2 ** max(receive_count - 1, 0), MAX_BACKOFF))


def receive_count(message: Any) -> int:
    """The message's ``ApproximateReceiveCount`` (1 when unknown)."""
    try:
        return int((getattr(message, "attributes", None) or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


class Lease:
    """Our hold on one message: extend, release, delete; remembers whether it was lost.

    ``message`` is a sqsmaster :class:`~sqsmaster.backends.Message` or a boto3
    ``sqs.Message``. Heartbeats of a sqsmaster message go through the queue's
    ``heartbeat_queue()``, a client of its own, safe inside a signal handler.
    """

    def __init__(self, message: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.message = message
        self.message_id = getattr(message, "message_id", None)
        self._clock = clock
        self.received_at: float = getattr(message, "received_at", None) or clock()
        #: The visibility the receive set (None when unknown, e.g. a boto3 message).
        self.received_visibility: float | None = getattr(message, "visibility_timeout", None)
        self.expires_at: float | None = (None if self.received_visibility is None
                                         else self.received_at + self.received_visibility)
        self.lost = False
        self.extensions = 0
        self.failed_extensions = 0
        queue = getattr(message, "queue", None)
        heartbeat = getattr(queue, "heartbeat_queue", None)
        self._heartbeat_queue = heartbeat() if callable(heartbeat) else None

    def remaining(self) -> float | None:
        """Seconds left on the lease as far as we know (None when the receive did not say)."""
        return None if self.expires_at is None else self.expires_at - self._clock()

    def change_visibility(self, seconds: int) -> None:
        """Set the message's visibility; raises LeaseLost when the handle no longer holds it."""
        if self._heartbeat_queue is not None:
            self._heartbeat_queue.change_visibility(self.message.receipt_handle, seconds, message_id=self.message_id)
            return
        try:
            self.message.change_visibility(VisibilityTimeout=seconds)
        except Exception as exc:  # a boto3 message: map botocore's ClientError codes
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code in LEASE_LOST_CODES:
                raise LeaseLost(self.message_id, str(code), str(exc)) from exc
            raise

    def extend(self, seconds: float) -> bool:
        """Hide the message ``seconds`` more from now, capped at 12 hours from receipt.

        Returns True on success. A lost lease is logged loudly and remembered; any
        other failure is logged and left for the next tick to retry. Never raises.
        """
        if self.lost:
            return False
        now = self._clock()
        room = int(MAX_VISIBILITY_TIMEOUT - (now - self.received_at))
        timeout = int(min(seconds, room))
        if timeout <= 0:
            logger.error("message %s: the 12-hour visibility cap since receipt is reached; "
                         "SQS will redeliver it while the task runs", self.message_id)
            return False
        try:
            self.change_visibility(timeout)
        except LeaseLost as exc:
            self.lost = True
            logger.error("message %s: LEASE LOST (%s): it is no longer ours and may already run elsewhere; "
                         "heartbeats stop", self.message_id, exc.code)
            return False
        except Exception as exc:
            self.failed_extensions += 1
            logger.warning("message %s: extending visibility by %ss failed (%s); retrying",
                           self.message_id, timeout, exc)
            return False
        self.extensions += 1
        self.expires_at = now + timeout
        logger.debug("message %s: visibility extended by %ss", self.message_id, timeout)
        return True

    def release(self, delay: int) -> bool:
        """Hand the message back to the queue, visible again after ``delay`` seconds. Never raises."""
        if self.lost:
            logger.warning("message %s: not released, the lease was lost", self.message_id)
            return False
        try:
            self.change_visibility(int(min(delay, MAX_VISIBILITY_TIMEOUT)))
        except Exception as exc:
            logger.warning("message %s: release failed (%s); it comes back when its visibility expires",
                           self.message_id, exc)
            return False
        return True

    def delete(self) -> None:
        """Delete the message (acknowledge success). Raises what the queue raises."""
        self.message.delete()


class HeartbeatPolicy:
    """When to stop a task and when to extend its lease; one policy for every isolation mode.

    ``tick()`` raises :class:`HardTimeoutExceeded` past the hard timeout and
    :class:`TaskStuck` when ``running()`` says False; otherwise it extends the
    lease and returns the delay to the next tick, never later than the deadline.
    A failed extension never disarms the hard timeout.

    Once the lease is lost, heartbeats stop; ``on_lease_lost`` says what happens
    to the task: ``"continue"`` lets it run to its end (or hard timeout),
    ``"stop"`` raises :class:`TaskAbandoned` at that tick.
    """

    def __init__(self, lease: Lease, sqs_timeout: float, alarm_timeout: float, hard_timeout: float,
                 running: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.monotonic,
                 on_lease_lost: str = "continue") -> None:
        if on_lease_lost not in ON_LEASE_LOST:
            raise ConfigurationError(f"on_lease_lost={on_lease_lost!r}; choose one of {', '.join(ON_LEASE_LOST)}")
        self.on_lease_lost = on_lease_lost
        self.lease = lease
        self.sqs_timeout = sqs_timeout
        self.alarm_timeout = alarm_timeout
        self.hard_timeout = hard_timeout
        self._running = running
        self._clock = clock
        self.started_at = clock()
        self.deadline = self.started_at + hard_timeout
        self._last_ok = True

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    def needs_initial_extension(self) -> bool:
        """True unless the receive already hid the message for ``sqs_timeout`` with time to spare."""
        received = self.lease.received_visibility
        if received is None or received < self.sqs_timeout:
            return True
        remaining = self.lease.remaining()
        return remaining is None or remaining < self.alarm_timeout + 1

    def start(self) -> float:
        """Extend if needed (raising on failure, so no alarm is armed for a message that is not ours);
        return the delay to the first tick."""
        if self.needs_initial_extension():
            self.lease.change_visibility(int(self.sqs_timeout))
            self.lease.expires_at = self._clock() + self.sqs_timeout
        return self.next_delay()

    def next_delay(self) -> float:
        period = self.alarm_timeout if self._last_ok else min(self.alarm_timeout, HEARTBEAT_RETRY_DELAY)
        return max(0.0, min(period, self.deadline - self._clock()))

    def tick(self) -> float:
        now = self._clock()
        if now >= self.deadline:
            raise HardTimeoutExceeded(self.hard_timeout, now - self.started_at)
        if not self._running():
            raise TaskStuck(now - self.started_at)
        if not self.lease.lost:
            # A lost lease is not retried: its ticks go back to the plain alarm period.
            self._last_ok = self.lease.extend(self.sqs_timeout) or self.lease.lost
        if self.lease.lost and self.on_lease_lost == "stop":
            raise TaskAbandoned(self.lease.message_id, now - self.started_at)
        return self.next_delay()
