"""Streaming batched sends: SendMessageBatch with a latency-aware number of requests in flight.

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
from .errors import ConfigurationError, QueueDoesNotExist, QueueError, SubmitFailed
from .inflight import InFlightLimit
from .limits import MAX_BATCH_ENTRIES, MAX_BATCH_SIZE, message_size

logger = logging.getLogger(__name__)

#: Default ceiling on SendMessageBatch requests in flight; the window (:mod:`sqsmaster.inflight`) finds how many
#: of them pay. 64 hides up to ~80 ms of round trip at the rate one Python process can build requests.
DEFAULT_IN_FLIGHT = 64
#: Attempts per entry that SQS reports as failed by a server fault.
SEND_ATTEMPTS = 5
#: Batches read ahead of the sender threads (one lane); each thread holds one more.
LANE_DEPTH = 16


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


class _Sender:
    """The sender threads and what they share: counts, failures, the error that stops the run.

    Threads start as they are needed: with one lane, as many as the window holds (a thread
    that ends a request goes straight on to the next batch, with no other thread to wake),
    so a small submission or a saturated server costs a thread or two, not the ceiling's;
    on a FIFO queue, one per lane that has a batch.
    """

    def __init__(self, queue: QueueBackend, lanes: int, maximum: int, on_sent: Callable[[int], None] | None,
                 sleep: Callable[[float], None]) -> None:
        self.queue = queue
        self.on_sent = on_sent
        self.sleep = sleep
        self.sent = 0
        self.failed: list[FailedEntry] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.in_flight = InFlightLimit(maximum)
        # Each sender thread holds one batch besides these: a few more than in flight keep them busy, and memory
        # flat (at most 1 MiB a batch).
        depth = LANE_DEPTH if lanes == 1 else 2
        self.lanes: list[queue_module.Queue[list[SendEntry] | None]] = [
            queue_module.Queue(maxsize=depth) for _ in range(lanes)]
        self.threads: list[tuple[int, threading.Thread]] = []  # (lane, thread)
        self._served: set[int] = set()  # lanes with a thread
        self._closing = False

    def _wants_thread(self, lane: int) -> bool:
        if len(self.lanes) > 1:
            return lane not in self._served
        return len(self.threads) < self.in_flight.limit

    def _start_thread(self, lane: int) -> None:
        """Start a thread for ``lane`` if it (still) needs one."""
        with self.lock:
            if self._closing or not self._wants_thread(lane):
                return
            thread = threading.Thread(target=self._work, args=(self.lanes[lane],), daemon=True,
                                      name=f"sqsmaster-send-{len(self.threads)}")
            thread.start()
            self.threads.append((lane, thread))
            self._served.add(lane)

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
            ticket = self.in_flight.acquire()
            if len(self.lanes) == 1 and self._wants_thread(0):
                self._start_thread(0)  # the window grew (maybe while the producer waited on a full lane)
            try:
                response = self.queue.send_batch(batch)
            except BaseException:
                self.in_flight.release(ticket, answered=False)
                raise
            self.in_flight.release(ticket)
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
        if self._wants_thread(lane):
            self._start_thread(lane)
        target = self.lanes[lane]
        while self.error is None:
            try:
                target.put(batch, timeout=0.5)
                return
            except queue_module.Full:
                continue
        self._not_sent(batch)

    def finish(self) -> None:
        with self.lock:
            self._closing = True  # no thread starts after this: each one below gets its end marker
            threads = list(self.threads)
        for lane, _ in threads:
            self.lanes[lane].put(None)
        for _, thread in threads:
            thread.join()


def check_in_flight(max_in_flight: object) -> None:
    """Raise ConfigurationError unless ``max_in_flight`` is an int >= 1."""
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ConfigurationError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")


def send_entries(queue: QueueBackend, entries: Iterable[SendEntry], *, max_in_flight: int = DEFAULT_IN_FLIGHT,
                 fifo: bool = False, on_sent: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Send every entry with SendMessageBatch; return how many were sent.

    Entry ids must be unique within the stream (the index in the input is best:
    it names the entry in errors). Reads ``entries`` lazily, at most
    ``max_in_flight`` requests at once (and no more than a boto3 client's connection
    pool holds), fewer when more only wait (:mod:`sqsmaster.inflight`). With
    ``fifo``, each ``group_id`` is sent by one thread, in order.

    Raises :class:`SubmitFailed` if any entry could not be sent (after
    ``SEND_ATTEMPTS`` for server faults) or a request failed: then the entries
    already read but not sent are listed with the code ``NotSent`` and the rest
    are not read, so ``sent`` plus ``len(failed)`` is what was read. An error
    raised while reading ``entries`` propagates after the entries read before it
    were sent.
    """
    check_in_flight(max_in_flight)
    pool = getattr(queue, "max_connections", None)  # an SQS client's connection pool
    if isinstance(pool, int) and 0 < pool < max_in_flight:
        logger.debug("at most %d requests in flight: the client's connection pool holds %d", pool, pool)
        max_in_flight = pool
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
