"""Batched deletes for the worker: up to 10 succeeded messages per DeleteMessageBatch.

A delete per message is the most expensive call a short task makes. The worker
hands succeeded messages to a :class:`DeleteBatcher`, whose thread deletes them
ten at a time, and never later than ``max_delay`` seconds after the success:
well inside the message's visibility timeout, so a batched delete never arrives
after SQS has handed the message to someone else. A worker SIGKILLed in between
loses at most ``max_delay`` seconds of deletes: those messages run again, which
at-least-once delivery allows. At shutdown :meth:`DeleteBatcher.close` waits a
bounded time and names every message whose delete it could not confirm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any, Callable

from ..limits import MAX_BATCH_ENTRIES
from .signals import block_stop_signals

logger = logging.getLogger(__name__)

#: Longest a succeeded message waits for its delete (seconds).
DEFAULT_MAX_DELAY = 1.0


def _heartbeat_route(queue: Any) -> Any:
    return queue.heartbeat_queue()


class DeleteBatcher:
    """Collects succeeded messages and deletes them in batches from a thread of its own.

    ``add(message)`` queues a delete; ``close(timeout)`` sends what is left and stops the
    thread. Deletes go through ``route(message.queue)`` (default: the queue's
    ``heartbeat_queue()``, a client or connection of its own), so the thread never shares
    one with the task's code. A batch whose call raised is tried once more, unless closing.
    """

    def __init__(self, max_delay: float = DEFAULT_MAX_DELAY, route: Callable[[Any], Any] | None = None) -> None:
        self.max_delay = max_delay
        self._route = route or _heartbeat_route
        self._pending: list[tuple[Any, float]] = []
        self._in_flight: list[Any] = []
        self._failed: list[Any] = []
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sqsmaster-deletes", daemon=True)
        self._thread.start()

    def add(self, message: Any) -> None:
        """Queue ``message`` for deletion (within ``max_delay`` seconds)."""
        with self._condition:
            self._pending.append((message, time.monotonic()))
            # Wake the thread on the first one (to start its max_delay clock) and on a full batch.
            if len(self._pending) in (1, MAX_BATCH_ENTRIES):
                self._condition.notify()

    def _run(self) -> None:
        block_stop_signals()
        while True:
            with self._condition:
                while not self._closed and not self._due():
                    wait = self.max_delay - (time.monotonic() - self._pending[0][1]) if self._pending else None
                    self._condition.wait(wait)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH_ENTRIES], self._pending[MAX_BATCH_ENTRIES:]
                self._in_flight = [message for message, _ in batch]
            self._delete(self._in_flight)
            with self._condition:
                self._in_flight = []

    def _due(self) -> bool:
        return bool(self._pending) and (len(self._pending) >= MAX_BATCH_ENTRIES
                                        or time.monotonic() - self._pending[0][1] >= self.max_delay)

    def _delete(self, messages: list[Any]) -> None:
        by_queue: dict[Any, list[Any]] = defaultdict(list)
        for message in messages:
            by_queue[message.queue].append(message)
        for queue, batch in by_queue.items():
            failed = self._delete_batch(queue, batch)
            failed_ids = {int(entry["Id"]) for entry in failed}
            for index, message in enumerate(batch):
                if index not in failed_ids:
                    message.mark_deleted()
                    continue
                reason = next(e for e in failed if int(e["Id"]) == index).get("Message")
                logger.error("message %s: task succeeded but the delete failed (%s); it will run again",
                             message.message_id, reason)
                with self._condition:
                    if self._closed:  # owed at shutdown: close() reports it
                        self._failed.append(message)

    def _delete_batch(self, queue: Any, batch: list[Any]) -> list[dict[str, Any]]:
        handles = [message.receipt_handle for message in batch]
        for attempt in (1, 2):
            try:
                return list(self._route(queue).delete_batch(handles))
            except Exception as exc:
                if attempt == 2 or self._closed:
                    return [{"Id": str(i), "Code": type(exc).__name__, "Message": str(exc)}
                            for i in range(len(batch))]
        return []

    def unconfirmed(self) -> list[Any]:
        """The messages queued or being deleted whose delete is not confirmed yet."""
        with self._condition:
            return [message for message, _ in self._pending] + [m for m in self._in_flight if not m.deleted]

    def close(self, timeout: float | None = None) -> list[Any]:
        """Delete everything still pending, waiting at most ``timeout`` seconds, then stop the thread.

        Returns the messages whose delete failed or could not be confirmed in that time;
        each is logged by id (those tasks succeeded and will run again). A call still in
        flight at the timeout is abandoned to the daemon thread, which starts no new one.
        """
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout)
        left = self.unconfirmed()
        for message in left:
            logger.error("message %s: task succeeded but its delete could not be made before the worker stopped; "
                         "it will run again", message.message_id)
        with self._condition:
            self._pending = []  # an abandoned thread must not start another call
            failed, self._failed = self._failed, []
        return left + [message for message in failed if message not in left]
