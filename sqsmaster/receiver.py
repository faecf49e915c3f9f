"""Receiving for the worker: priority queues, polls a signal can interrupt, and backoff when SQS is away.

A long poll cannot be cancelled once sent, and a message it returns after we
stopped listening would stay hidden for its whole visibility timeout. So the
worker long-polls in slices of at most :data:`POLL_SLICE` seconds and checks for
a shutdown between slices: an idle worker stops within about a second. On real
SQS that is at most one empty receive per second per idle worker.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .alarms import block_stop_signals
from .backends import Message, QueueBackend, open_queue
from .consumer import queue_is_empty
from .errors import LEASE_LOST_CODES, QueueDoesNotExist, QueueError
from .lease import RELEASE_TIMEOUT, change_visibilities
from .limits import MAX_RECEIVE_MESSAGES, MAX_VISIBILITY_TIMEOUT
from .supervise.policy import HEARTBEAT_RETRY_DELAY, heartbeat_call_timeout

logger = logging.getLogger("sqsmaster.worker")

#: Longest single receive wait: the worker notices a shutdown within this many seconds.
POLL_SLICE = 1
#: A receive that has not answered this long after its wait is an unreachable endpoint.
RECEIVE_READ_TIMEOUT = POLL_SLICE + 3
#: Longest pause between receives while the endpoint is unreachable.
MAX_UNREACHABLE_BACKOFF = 30.0
#: Read timeout of every other SQS call a worker makes (deletes, releases, dead-letter sends, re-sends),
#: with no botocore retries (the worker has backoffs of its own): no call can hold up a shutdown longer.
WORKER_READ_TIMEOUT = 5.0


def open_worker_queue(url: str, queue_constructor: Callable[[str], Any] | None = None) -> tuple[QueueBackend, Any]:
    """The worker's handle on a queue, and the boto3 client it made for it (None: nothing to close).

    An SQS queue gets a client whose calls fail within :data:`WORKER_READ_TIMEOUT` seconds
    (plus the connect timeout), tried once: the clock, not the network, bounds a shutdown.
    """
    if queue_constructor is None and url.startswith(("http://", "https://")):
        from .backends.sqs import make_client

        client = make_client(url, read_timeout=WORKER_READ_TIMEOUT, max_attempts=1)
        return open_queue(url, client=client), client
    return open_queue(url, queue_constructor=queue_constructor), None


def receiving_twin(queue: QueueBackend) -> QueueBackend:
    """The queue to receive through: for SQS a twin with a short read timeout and no botocore retries,
    so an unreachable endpoint shows within seconds and our own backoff takes over."""
    from .backends.sqs import SqsQueue, make_client

    if type(queue) is not SqsQueue:
        return queue
    return SqsQueue(queue.url, make_client(queue.url, read_timeout=RECEIVE_READ_TIMEOUT, max_attempts=1))


def unreachable_backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed receives: 1, 2, 4... capped at 30."""
    return float(min(2 ** max(failures - 1, 0), MAX_UNREACHABLE_BACKOFF))


class Receiver:
    """Receive from queues in priority order: a queue is taken only when every queue before it is empty.

    ``receive(n)`` returns up to ``n`` messages from the first queue that has
    any (received through :func:`receiving_twin`, but bound to the queue given,
    whose client deletes and releases them), [] when none has (after one poll slice), and never raises QueueError for
    an unreachable endpoint: it logs, waits with capped exponential backoff
    (checking ``should_stop`` every 0.1 s) and returns []. QueueDoesNotExist propagates.
    """

    def __init__(self, queues: list[QueueBackend], *, wait_time: float, visibility_timeout: int,
                 should_stop: Callable[[], bool] = lambda: False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.queues = queues
        self._receiving = [receiving_twin(queue) for queue in queues]
        self.slice = int(min(wait_time, POLL_SLICE))
        self.visibility_timeout = visibility_timeout
        self._should_stop = should_stop
        self._sleep = sleep
        self.failures = 0

    def receive(self, count: int) -> list[Message]:
        count = max(1, min(count, MAX_RECEIVE_MESSAGES))
        try:
            for index, queue in enumerate(self._receiving):
                last = index == len(self.queues) - 1
                messages = queue.receive(count, self.slice if last else 0, self.visibility_timeout)
                if messages:
                    for message in messages:
                        message.queue = self.queues[index]
                    break
        except QueueDoesNotExist:
            raise
        except QueueError as exc:
            self.failures += 1
            delay = unreachable_backoff(self.failures)
            logger.warning("queue unreachable (%s); receive failed %d time(s) in a row, retrying in %.0fs",
                           exc, self.failures, delay)
            self.pause(delay)
            return []
        if self.failures:
            logger.warning("queue reachable again after %d failed receive(s)", self.failures)
            self.failures = 0
        if not messages and self.slice == 0:
            self.pause(0.5)  # short polling: no hot loop on an empty queue
        return messages

    def twin(self, queue: QueueBackend) -> QueueBackend:
        """The handle a thread of the worker uses for ``queue`` (deletes, releases at shutdown): the
        receiving twin of an SQS queue (its calls are bounded, see :func:`receiving_twin`), else the
        queue's ``heartbeat_queue()`` (a connection of its own)."""
        for twin, mine in zip(self._receiving, self.queues):
            if mine is queue and twin is not queue:
                return twin
        return queue.heartbeat_queue()

    def close(self) -> None:
        for twin, queue in zip(self._receiving, self.queues):
            if twin is not queue:
                twin.close()

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early once ``should_stop()`` says so."""
        deadline = time.monotonic() + seconds
        while not self._should_stop():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._sleep(min(left, 0.1))

    def all_empty(self) -> bool:
        """True when every queue reports no visible, in-flight or delayed message."""
        try:
            return all(queue_is_empty(queue) for queue in self._receiving)
        except QueueDoesNotExist:
            raise
        except QueueError:
            return False


class PendingLeases:
    """Received-but-unstarted messages, kept hidden by a heartbeat thread until they start or are released.

    Every visibility change happens under the lock that :meth:`pop` and
    :meth:`release_all` take, so a message is never extended once it was popped
    (started) or released, and a release never races an extension of the same
    message (which could overwrite it). Extensions go ten to a call
    (ChangeMessageVisibilityBatch) through the queue's ``heartbeat_queue(timeout)``,
    a client of its own whose calls are bounded. Once ``should_release()`` says so
    (a shutdown began) the thread releases them all at once, while a task may
    still be running in the main thread. :meth:`close` releases what is left and
    joins the thread.
    """

    #: How often the thread looks at ``should_release`` (s).
    TICK = 0.1

    def __init__(self, visibility_timeout: int, period: float,
                 should_release: Callable[[], bool] = lambda: False) -> None:
        self.visibility_timeout = visibility_timeout
        self.period = period
        #: Bound on one batch call (s): what a lease has left at a heartbeat, as for a running task.
        self.call_timeout = heartbeat_call_timeout(visibility_timeout, period)
        self._should_release = should_release
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def add(self, messages: list[Message]) -> None:
        with self._lock:
            self._messages.extend(messages)
        if self._thread is None and messages:
            self._thread = threading.Thread(target=self._beat, name="sqsmaster-prefetch-heartbeat", daemon=True)
            self._thread.start()

    def pop(self) -> Message | None:
        """The oldest pending message (no longer heartbeated), or None."""
        with self._lock:
            return self._messages.pop(0) if self._messages else None

    def release_all(self) -> int:
        """Make every pending message visible again at once; returns how many."""
        with self._lock:  # waits for an extension in flight: the release must land after it
            messages, self._messages = self._messages, []
        failed = change_visibilities([(message, 0) for message in messages], RELEASE_TIMEOUT)
        for message in messages:
            if message in failed:
                logger.warning("message %s: release failed (%s); it comes back when its visibility expires",
                               message.message_id, failed[message][1])
            else:
                logger.info("released message %s (received, not started): visible again now", message.message_id)
        return len(messages)

    def _beat(self) -> None:
        block_stop_signals()
        next_beat = time.monotonic() + self.period
        while not self._stop.wait(self.TICK):
            if self._should_release():
                self.release_all()
                continue
            if time.monotonic() < next_beat:
                continue
            ok = self._extend_pending()
            next_beat = time.monotonic() + (self.period if ok else min(self.period, HEARTBEAT_RETRY_DELAY))

    def _extend_pending(self) -> bool:
        """Extend every pending message; drop those whose lease is lost. False if some call failed."""
        ok = True
        with self._lock:
            now = time.monotonic()
            entries, failed = [], {}
            for message in self._messages:
                seconds = int(min(self.visibility_timeout, MAX_VISIBILITY_TIMEOUT - (now - message.received_at)))
                if seconds > 0:
                    entries.append((message, seconds))
                else:
                    failed[message] = ("InvalidParameterValue", "the 12-hour visibility cap since receipt")
            failed.update(change_visibilities(entries, self.call_timeout))
            for message, seconds in entries:
                if message not in failed:
                    message.leased(seconds, at=now)  # the handler then skips its own first extension
            for message, (code, reason) in failed.items():
                if code in LEASE_LOST_CODES:
                    self._messages.remove(message)
                    logger.error("message %s: LEASE LOST (%s) before it started: no longer ours; dropped",
                                 message.message_id, code)
                else:
                    ok = False
                    logger.warning("message %s: extending visibility of a prefetched message failed (%s); "
                                   "retrying", message.message_id, reason)
        return ok

    def close(self) -> None:
        """Release every pending message, stop the thread and wait for it."""
        self.release_all()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.TICK * 10)

