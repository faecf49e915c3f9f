"""Batched deletes for the worker: up to 10 succeeded messages per DeleteMessageBatch.

A delete per message is the most expensive call a short task makes. The worker
hands succeeded messages to a :class:`DeleteBatcher`, whose thread deletes them
ten at a time, and never later than ``max_delay`` seconds after the success:
well inside the message's visibility timeout, so a batched delete never arrives
after SQS has handed the message to someone else. A worker SIGKILLed in between
loses at most ``max_delay`` seconds of deletes: those messages run again, which
at-least-once delivery allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from .limits import MAX_BATCH_ENTRIES

logger = logging.getLogger(__name__)

#: Longest a succeeded message waits for its delete (seconds).
DEFAULT_MAX_DELAY = 1.0


class DeleteBatcher:
    """Collects succeeded messages and deletes them in batches from a thread of its own.

    ``add(message)`` queues a delete; ``close()`` sends what is left and stops the
    thread. Deletes go through each queue's ``heartbeat_queue()`` (a client or
    connection of its own), so the thread never shares one with the task's code.
    """

    def __init__(self, max_delay: float = DEFAULT_MAX_DELAY) -> None:
        self.max_delay = max_delay
        self._pending: list[tuple[Any, float]] = []
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
        while True:
            with self._condition:
                while not self._closed and not self._due():
                    wait = self.max_delay - (time.monotonic() - self._pending[0][1]) if self._pending else None
                    self._condition.wait(wait)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH_ENTRIES], self._pending[MAX_BATCH_ENTRIES:]
            self._delete([message for message, _ in batch])

    def _due(self) -> bool:
        return bool(self._pending) and (len(self._pending) >= MAX_BATCH_ENTRIES
                                        or time.monotonic() - self._pending[0][1] >= self.max_delay)

    def _delete(self, messages: list[Any]) -> None:
        by_queue: dict[Any, list[Any]] = defaultdict(list)
        for message in messages:
            by_queue[message.queue].append(message)
        for queue, batch in by_queue.items():
            try:
                failed = queue.heartbeat_queue().delete_batch([m.receipt_handle for m in batch])
            except Exception as exc:
                failed = [{"Id": str(i), "Code": type(exc).__name__, "Message": str(exc)} for i in range(len(batch))]
            failed_ids = {int(entry["Id"]) for entry in failed}
            for index, message in enumerate(batch):
                if index in failed_ids:
                    logger.error("message %s: task succeeded but the delete failed (%s); it will run again",
                                 message.message_id, next(e for e in failed if int(e["Id"]) == index)["Message"])
                else:
                    message.mark_deleted()

    def close(self) -> None:
        """Delete everything still pending, then stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()
