"""What the durable local queues (``sqlite://``, ``fq://``) share: sending through one
``_insert`` and long polls over one ``_receive_once``."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any, Iterable

from .base import Message, QueueBackend, SendEntry
from .options import POLL_INTERVAL, QueueOptions


class DurableQueue(QueueBackend):
    """A local queue with ``options``; subclasses write ``_insert`` and ``_receive_once``."""

    url: str
    options: QueueOptions

    def _insert(self, entries: list[SendEntry]) -> list[str]:
        """Store ``entries`` (all or none where the store allows); return their message ids in order."""
        raise NotImplementedError

    def _receive_once(self, max_messages: int, timeout: int) -> list[Message]:
        """Lease up to ``max_messages`` visible messages now; an empty list when none is visible."""
        raise NotImplementedError

    def send(self, entry: SendEntry) -> dict[str, Any]:
        return {"MessageId": self._insert([entry])[0]}

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        """All entries are stored, or the call raises QueueError."""
        ids = self._insert(entries)
        return {"Successful": [{"Id": e.id, "MessageId": m} for e, m in zip(entries, ids)], "Failed": []}

    def send_many(self, entries: Iterable[SendEntry], chunk: int = 500) -> list[str]:
        """Send any number of messages, ``chunk`` at a time; returns their ids in order.

        Not an SQS verb (SQS batches hold 10): the bulk path for producers of a local queue.
        A failure raises QueueError; the chunks stored before it stay sent.
        """
        iterator, ids = iter(entries), []
        while batch := list(islice(iterator, chunk)):
            ids += self._insert(batch)
        return ids

    def receive(self, max_messages: int = 1, wait_time: int = 0,
                visibility_timeout: int | None = None) -> list[Message]:
        """Lease up to ``max_messages`` visible messages; polls every 50 ms for up to ``wait_time`` s."""
        timeout = self.options.visibility_timeout if visibility_timeout is None else visibility_timeout
        deadline = time.monotonic() + wait_time
        while True:
            messages = self._receive_once(max_messages, timeout)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            time.sleep(min(POLL_INTERVAL, remaining))
