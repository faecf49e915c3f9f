"""Prefetched messages: received, not yet started, and kept hidden until they start or are released.

A consumer that takes several messages per receive (the worker's ``--prefetch``,
``task_generator(max_messages=N)``) runs them one at a time; the ones waiting must
not become visible to other consumers meanwhile, and must come back at once when
the consumer stops. :class:`PendingLeases` does both, for the worker and for
``task_generator`` alike.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from .backends import Message
from .errors import LEASE_LOST_CODES
from .lease import RELEASE_TIMEOUT, change_visibilities
from .limits import HEARTBEAT_RETRY_DELAY, MAX_VISIBILITY_TIMEOUT, heartbeat_call_timeout

logger = logging.getLogger("sqsmaster.worker")


def leave_stop_signals_to_the_main_thread() -> None:
    """In a helper thread: block SIGTERM and SIGINT, so the kernel hands them to the main thread,
    whose handlers act on them (and whose blocking call they interrupt)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


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
    joins the thread. ``thread_setup`` runs first in the thread (the worker blocks
    its own stop and wake signals there).
    """

    #: How often the thread looks at ``should_release`` (s).
    TICK = 0.1

    def __init__(self, visibility_timeout: int, period: float,
                 should_release: Callable[[], bool] = lambda: False,
                 thread_setup: Callable[[], None] = leave_stop_signals_to_the_main_thread) -> None:
        self.visibility_timeout = visibility_timeout
        self.period = period
        #: Bound on one batch call (s): what a lease has left at a heartbeat, as for a running task.
        self.call_timeout = heartbeat_call_timeout(visibility_timeout, period)
        self._should_release = should_release
        self._thread_setup = thread_setup
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
        self._thread_setup()
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

