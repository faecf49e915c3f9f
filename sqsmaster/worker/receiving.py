"""Receiving for the worker: priority queues, long polls that cost little and never hold up a stop, and
backoff when SQS is away.

A worker receives in two ways, and goes from one to the other on its own:

* **busy** (the last receive got messages): one receive per queue in priority
  order, each hiding what it gets for the worker's whole visibility, the last one
  waiting at most :data:`POLL_SLICE` second; a stop waits for it and releases what
  it returned. No visibility call is needed before a task starts.
* **idle** (a busy pass found every queue empty): on SQS, one long poll of
  ``wait_time`` seconds at a time (:class:`~sqsmaster.worker.longpoll.LongPoll`: on a thread
  the worker stops listening to at once, with a short visibility, extended when the
  poll gets messages). The queues take turns, so several queues idle at the cost of
  one: three ReceiveMessage calls a minute at the default 20 s, however many queues.
  A message on a queue that is not being watched waits for that queue's turn (at
  most ``(queues - 1) * wait_time``); once a poll wakes the worker on a queue, the
  queues before it are looked at first, so the first queue still wins.

Local queues (``mem://``, ``sqlite://``, ``fq://``) cost nothing per receive and are
always received the busy way.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ..backends import Message, QueueBackend, open_bounded_queue
from ..consumer import queue_is_empty
from ..errors import QueueDoesNotExist, QueueError
from ..lease import RELEASE_TIMEOUT, change_visibilities
from ..limits import MAX_RECEIVE_MESSAGES
from .longpoll import LongPoll

logger = logging.getLogger("sqsmaster.worker")

#: Longest wait of a busy receive (s): a stop waits it out, then releases what it returned.
POLL_SLICE = 1
#: A receive that has not answered this long after its wait is an unreachable endpoint.
RECEIVE_MARGIN = 3
RECEIVE_READ_TIMEOUT = POLL_SLICE + RECEIVE_MARGIN
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
    return open_bounded_queue(url, WORKER_READ_TIMEOUT, queue_constructor)


def receiving_twin(queue: QueueBackend, wait_time: int = POLL_SLICE) -> QueueBackend:
    """The queue to receive through: for SQS a twin whose read timeout is ``wait_time`` plus
    :data:`RECEIVE_MARGIN` seconds, with no botocore retries, so an unreachable endpoint shows soon after
    the wait and our own backoff takes over. Other backends receive through the queue itself."""
    return queue.polling_twin(wait_time + RECEIVE_MARGIN)


def unreachable_backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed receives: 1, 2, 4... capped at 30."""
    return float(min(2 ** max(failures - 1, 0), MAX_UNREACHABLE_BACKOFF))


class Receiver:
    """Receive from queues in priority order: a queue is taken only when every queue before it is empty.

    ``receive(n)`` returns up to ``n`` messages, hidden for ``visibility_timeout`` seconds
    and bound to the queue given (whose client deletes and releases them), or [] (see the
    module's docstring for the busy and idle ways). It returns [] at once when
    ``should_stop()`` turns true during an idle long poll. It never raises QueueError for
    an unreachable endpoint: it logs, waits with capped exponential backoff (checking
    ``should_stop`` every 0.1 s) and returns []. QueueDoesNotExist propagates.

    ``long_poll=False`` keeps the busy way while idle too (a drain that must notice the
    queues are empty within a second of it, not after a long poll).
    """

    def __init__(self, queues: list[QueueBackend], *, wait_time: float, visibility_timeout: int,
                 should_stop: Callable[[], bool] = lambda: False,
                 sleep: Callable[[float], None] = time.sleep, long_poll: bool = True) -> None:
        self.queues = queues
        self._receiving = [receiving_twin(queue) for queue in queues]
        self.slice = int(min(wait_time, POLL_SLICE))
        self.wait_time = int(wait_time)
        self.visibility_timeout = visibility_timeout
        self._should_stop = should_stop
        self._sleep = sleep
        self.failures = 0
        #: Long polls only pay where a receive is a billed request that cannot be cancelled: SQS.
        self._long_polling = long_poll and self.wait_time > self.slice and all(
            twin is not queue for twin, queue in zip(self._receiving, queues))
        self._polling: list[QueueBackend | None] = [None] * len(queues)
        self.idle = False
        self._turn = 0  # the queue the next idle long poll watches

    def receive(self, count: int) -> list[Message]:
        count = max(1, min(count, MAX_RECEIVE_MESSAGES))
        try:
            if self.idle and self._long_polling:
                messages = self._receive_idle(count)
            else:
                messages = self._receive_busy(count, len(self.queues), self.slice)
                self.idle = not messages
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

    def _receive_busy(self, count: int, queues: int, last_wait: int) -> list[Message]:
        """From the first of the first ``queues`` queues that has messages; the last one waits ``last_wait`` s."""
        for index in range(queues):
            wait = last_wait if index == queues - 1 else 0
            messages = self._receiving[index].receive(count, wait, self.visibility_timeout)
            if messages:
                for message in messages:
                    message.queue = self.queues[index]
                return messages
        return []

    def _receive_idle(self, count: int) -> list[Message]:
        """One long poll of the queue whose turn it is; if it wakes the worker, the queues before it first."""
        index = self._turn
        poller = self._polling[index]
        if poller is None:
            poller = self._polling[index] = receiving_twin(self.queues[index], self.wait_time)
        messages = LongPoll(self.queues[index], poller, count, self.wait_time,
                            self.visibility_timeout).start().wait(self._should_stop)
        if not messages:
            if not self._should_stop():
                self._turn = (index + 1) % len(self.queues)
            return []
        self.idle = False
        if index == 0 or self._should_stop():
            return messages
        return self._before(index, count, messages)

    def _before(self, index: int, count: int, woken: list[Message]) -> list[Message]:
        """``woken`` came from queue ``index``: messages of a queue before it go first, and what is over
        ``count`` is released at once (never held unrun while another worker could take it)."""
        try:
            earlier = self._receive_busy(count, index, 0)
        except QueueError as exc:  # the woken messages are ours and hidden: run them rather than strand them
            logger.warning("receive from a higher-priority queue failed (%s); taking the messages in hand", exc)
            return woken
        taken = earlier + woken
        extra = taken[count:]
        if extra:
            failed = change_visibilities([(message, 0) for message in extra], RELEASE_TIMEOUT)
            for message in extra:
                logger.info("message %s: released unrun (%s): a higher-priority queue had messages", message.message_id,
                            "visible again now" if message not in failed else f"release failed: {failed[message][1]}")
        return taken[:count]

    def twin(self, queue: QueueBackend) -> QueueBackend:
        """The handle a thread of the worker uses for ``queue`` (deletes, releases at shutdown): the
        receiving twin of an SQS queue (its calls are bounded, see :func:`receiving_twin`), else the
        queue's ``heartbeat_queue()`` (a connection of its own)."""
        for twin, mine in zip(self._receiving, self.queues):
            if mine is queue and twin is not queue:
                return twin
        return queue.heartbeat_queue()

    def close(self) -> None:
        for twin, queue in zip([*self._receiving, *self._polling], [*self.queues, *self.queues]):
            if twin is not None and twin is not queue:
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
