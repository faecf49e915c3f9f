"""Streaming batched sends: SendMessageBatch with a bounded number of requests in flight.

:func:`send_entries` reads entries lazily, packs them into batches of at most
10 entries and 1 MiB, and hands the batches to a few sender threads through
bounded queues, so memory stays flat however many entries there are. Entries a
batch reports in ``Failed`` (server faults) are retried with backoff; what still
fails is reported at the end in one :class:`~sqsmaster.errors.SubmitFailed`.
On a FIFO queue each group always goes through the same thread, in order.
"""

from __future__ import annotations

import logging
import queue as queue_module
import random
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

from .backends import QueueBackend, SendEntry
from .errors import QueueDoesNotExist, QueueError, SubmitFailed
from .limits import MAX_BATCH_ENTRIES, MAX_BATCH_SIZE, message_size

logger = logging.getLogger(__name__)

#: Default ceiling on SendMessageBatch requests in flight at once (see :class:`InFlightLimit`).
DEFAULT_IN_FLIGHT = 8
#: Messages per measuring window of :class:`InFlightLimit`.
PROBE_WINDOW = 200
#: How much faster a doubled limit must send to be kept.
PROBE_GAIN = 1.1
#: Attempts per entry that SQS reports as failed by a server fault.
SEND_ATTEMPTS = 5


@dataclass(frozen=True)
class FailedEntry:
    """An entry SQS did not take: ``index`` in the input (its entry id), the entry, SQS's code and message."""

    index: int
    entry: SendEntry
    code: str
    message: str


def retry_delay(attempt: int) -> float:
    """Backoff before retry ``attempt`` (1, 2, ...): 0.1 s doubling, at most 5 s, with jitter."""
    return min(0.1 * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.0)


class InFlightLimit:
    """How many requests may be in flight: found by probing, as TCP finds its window.

    It starts at one request. After each window of :data:`PROBE_WINDOW` messages it
    compares the send rate with the best so far: while doubling the limit makes
    sending at least :data:`PROBE_GAIN` times faster, it doubles again (up to
    ``maximum``); once it does not, it goes back to the best limit and stays. Against
    a distant server (real SQS: 10-30 ms a request) the limit climbs, hiding the
    latency; against a server that is itself the bottleneck (a local moto), more
    requests in flight only add contention, and it stays low.
    """

    def __init__(self, maximum: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self.limit = 1
        self.settled = maximum == 1
        self._clock = clock
        self._active = 0
        self._best = (0.0, 1)  # (rate, limit)
        self._window_start = clock()
        self._window_messages = 0
        self._condition = threading.Condition()

    def acquire(self) -> None:
        """Wait for a free place, then take it."""
        with self._condition:
            while self._active >= self.limit:
                self._condition.wait()
            self._active += 1

    def release(self, messages: int) -> None:
        """Give the place back, counting the messages the request sent."""
        with self._condition:
            self._active -= 1
            self._observe(messages)
            self._condition.notify_all()

    def _observe(self, messages: int) -> None:
        if self.settled:
            return
        self._window_messages += messages
        if self._window_messages < PROBE_WINDOW:
            return
        now = self._clock()
        rate = self._window_messages / max(now - self._window_start, 1e-9)
        self._window_start, self._window_messages = now, 0
        if rate >= self._best[0] * PROBE_GAIN:
            self._best = (rate, self.limit)
            if self.limit < self.maximum:
                self.limit = min(2 * self.limit, self.maximum)
                return
        self.limit = self._best[1]
        self.settled = True
        logger.debug("%d request(s) in flight send fastest (%.0f msg/s)", self.limit, self._best[0])


class _Sender:
    """The sender threads and what they share: counts, failures, the error that stops the run."""

    def __init__(self, queue: QueueBackend, lanes: int, threads: int, on_sent: Callable[[int], None] | None,
                 sleep: Callable[[float], None]) -> None:
        self.queue = queue
        self.on_sent = on_sent
        self.sleep = sleep
        self.sent = 0
        self.failed: list[FailedEntry] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.in_flight = InFlightLimit(threads)
        depth = 2 * max(1, threads // lanes)
        self.lanes: list[queue_module.Queue[list[SendEntry] | None]] = [
            queue_module.Queue(maxsize=depth) for _ in range(lanes)]
        self.threads = [threading.Thread(target=self._work, args=(self.lanes[i % lanes],), daemon=True,
                                         name=f"sqsmaster-send-{i}") for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _work(self, lane: "queue_module.Queue[list[SendEntry] | None]") -> None:
        while True:
            batch = lane.get()
            if batch is None:
                return
            if self.error is not None:
                self._not_sent(batch)
                continue
            try:
                self._send(batch)
            except BaseException as exc:  # stop the run: the producer loop re-raises it
                with self.lock:
                    self.error = self.error or exc
                self._not_sent(batch)

    def _send(self, batch: list[SendEntry]) -> None:
        attempt = 1
        while True:
            self.in_flight.acquire()
            sent = 0
            try:
                response = self.queue.send_batch(batch)
                sent = len(response["Successful"])
            finally:
                self.in_flight.release(sent)
            failures = {failure["Id"]: failure for failure in response["Failed"]}
            self._count(len(response["Successful"]))
            if not failures:
                return
            retry = [entry for entry in batch
                     if entry.id in failures and not failures[entry.id].get("SenderFault")]
            final = [entry for entry in batch if entry.id in failures and failures[entry.id].get("SenderFault")]
            if attempt >= SEND_ATTEMPTS:
                final, retry = final + retry, []
            self._record(final, failures)
            if not retry:
                return
            attempt += 1
            logger.info("%d entr(y/ies) failed on %s (%s); retry %d", len(retry), self.queue.url,
                        failures[retry[0].id].get("Code"), attempt - 1)
            self.sleep(retry_delay(attempt - 1))
            batch = retry

    def _count(self, sent: int) -> None:
        with self.lock:
            self.sent += sent
            if self.on_sent is not None and sent:
                self.on_sent(sent)

    def _record(self, entries: list[SendEntry], failures: dict[str, dict]) -> None:
        with self.lock:
            for entry in entries:
                failure = failures[entry.id]
                self.failed.append(FailedEntry(int(entry.id) if entry.id.isdigit() else -1, entry,
                                               str(failure.get("Code")), str(failure.get("Message"))))

    def _not_sent(self, batch: list[SendEntry]) -> None:
        """Entries read but never sent because the run stopped: reported as failed, code ``NotSent``."""
        reason = {"Code": "NotSent", "Message": f"not sent: the run stopped after {self.error}"}
        self._record(batch, {entry.id: reason for entry in batch})

    def put(self, lane: int, batch: list[SendEntry]) -> None:
        """Queue a batch; blocks while the lane is full (this is what keeps memory flat)."""
        target = self.lanes[lane]
        while self.error is None:
            try:
                target.put(batch, timeout=0.5)
                return
            except queue_module.Full:
                continue
        self._not_sent(batch)

    def finish(self) -> None:
        for thread_index in range(len(self.threads)):
            self.lanes[thread_index % len(self.lanes)].put(None)
        for thread in self.threads:
            thread.join()


def send_entries(queue: QueueBackend, entries: Iterable[SendEntry], *, max_in_flight: int = DEFAULT_IN_FLIGHT,
                 fifo: bool = False, on_sent: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Send every entry with SendMessageBatch; return how many were sent.

    Entry ids must be unique within the stream (the index in the input is best:
    it names the entry in errors). Reads ``entries`` lazily, at most
    ``max_in_flight`` requests at once, fewer when more do not send faster
    (:class:`InFlightLimit`). With ``fifo``, each ``group_id`` is sent by one
    thread, in order.

    Raises :class:`SubmitFailed` if any entry could not be sent (after
    ``SEND_ATTEMPTS`` for server faults) or a request failed: then the entries
    already read but not sent are listed with the code ``NotSent`` and the rest
    are not read, so ``sent`` plus ``len(failed)`` is what was read. An error
    raised while reading ``entries`` propagates after the entries read before it
    were sent.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
    lanes = max_in_flight if fifo else 1
    sender = _Sender(queue, lanes, max_in_flight, on_sent, sleep)
    pending: list[list[SendEntry]] = [[] for _ in range(lanes)]
    sizes = [0] * lanes
    try:
        for entry in entries:
            if sender.error is not None:
                break
            lane = zlib.crc32((entry.group_id or "").encode()) % lanes if lanes > 1 else 0
            size = message_size(entry.body, entry.message_attributes)
            if pending[lane] and (len(pending[lane]) == MAX_BATCH_ENTRIES or sizes[lane] + size > MAX_BATCH_SIZE):
                sender.put(lane, pending[lane])
                pending[lane], sizes[lane] = [], 0
            pending[lane].append(entry)
            sizes[lane] += size
    except Exception:
        _flush(sender, pending)
        raise
    except BaseException:
        sender.error = sender.error or RuntimeError("interrupted")
        sender.finish()
        raise
    _flush(sender, pending)
    if isinstance(sender.error, QueueDoesNotExist):
        raise sender.error
    if sender.failed or sender.error is not None:
        cause = sender.error
        if cause is not None and not isinstance(cause, QueueError):
            raise cause
        raise SubmitFailed(sender.sent, sorted(sender.failed, key=lambda f: f.index), cause)
    return sender.sent


def _flush(sender: _Sender, pending: list[list[SendEntry]]) -> None:
    for lane, batch in enumerate(pending):
        if batch:
            sender.put(lane, batch)
    sender.finish()
