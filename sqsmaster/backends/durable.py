"""What the durable local queues (``sqlite://``, ``fq://``) share: when a queue comes to exist,
sending through one ``_insert``, and long polls over one ``_receive_once``.

A durable queue is created by :meth:`DurableQueue.create` (SQS's CreateQueue), or by the first
send when the handle was opened with ``create=True`` (a producer's first use; the default).
Nothing else creates one: a receive, a heartbeat, the queue's attributes or a purge on a queue
that does not exist raise :class:`~sqsmaster.errors.QueueDoesNotExist`, as SQS does, so a
mistyped path in a consumer's URL is an error instead of a new, empty queue.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any, Iterable

from ..errors import QueueDoesNotExist
from .base import Message, QueueBackend, SendEntry
from .options import POLL_INTERVAL, QueueOptions

logger = logging.getLogger(__name__)


class DurableQueue(QueueBackend):
    """A local queue with ``options``; subclasses write ``_open_existing``, ``_create``, ``_insert`` and
    ``_receive_once``, and set ``url``, ``create_on_send`` and ``_options`` (None until known)."""

    url: str
    #: A send creates the queue when it does not exist (else it raises QueueDoesNotExist).
    create_on_send: bool
    _options: QueueOptions | None

    def _open_existing(self) -> QueueOptions | None:
        """The stored options of the queue if it exists (checked against the URL's), else None. Creates nothing."""
        raise NotImplementedError

    def _create(self) -> tuple[QueueOptions, bool]:
        """Create the queue (and its dead-letter queue) if missing; ``(stored options, whether it was new)``."""
        raise NotImplementedError

    def _missing(self) -> str:
        """Why the queue is not there, for the error line (no such file, the queues the file has...)."""
        raise NotImplementedError

    def _insert(self, entries: list[SendEntry]) -> list[str]:
        """Store ``entries`` (all or none where the store allows); return their message ids in order."""
        raise NotImplementedError

    def _receive_once(self, max_messages: int, timeout: int) -> list[Message]:
        """Lease up to ``max_messages`` visible messages now; an empty list when none is visible."""
        raise NotImplementedError

    @property
    def options(self) -> QueueOptions:
        """The queue's attributes. Raises QueueDoesNotExist when there is no such queue (yet)."""
        if self._options is None:
            self._options = self._open_existing()  # another process may have created it since we looked
            if self._options is None:
                raise QueueDoesNotExist(f"queue {self.url} does not exist ({self._missing()}); check the path and "
                                        "the name, or create it first: sqsmaster create URL")
        return self._options

    def _require(self) -> QueueOptions:
        """The options of a queue that must exist: QueueDoesNotExist before anything touches the store."""
        return self.options

    def exists(self) -> bool:
        """True when the queue exists. Creates nothing."""
        try:
            self._require()
        except QueueDoesNotExist:
            return False
        return True

    def create(self) -> "DurableQueue":
        """Create the queue and its dead-letter queue with the URL's options, as SQS's CreateQueue does:
        idempotent; an existing queue with other options raises ConfigurationError. Returns the queue."""
        self._options, new = self._create()
        if new:
            logger.info("created queue %s", self.url)
        return self

    def _ready_to_send(self) -> QueueOptions:
        if self._options is None and self.create_on_send and not self.exists():
            self.create()
        return self.options

    def send(self, entry: SendEntry) -> dict[str, Any]:
        self._ready_to_send()
        return {"MessageId": self._insert([entry])[0]}

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        """All entries are stored, or the call raises QueueError."""
        self._ready_to_send()
        ids = self._insert(entries)
        return {"Successful": [{"Id": e.id, "MessageId": m} for e, m in zip(entries, ids)], "Failed": []}

    def send_many(self, entries: Iterable[SendEntry], chunk: int = 500) -> list[str]:
        """Send any number of messages, ``chunk`` at a time; returns their ids in order.

        Not an SQS verb (SQS batches hold 10): the bulk path for producers of a local queue.
        A failure raises QueueError; the chunks stored before it stay sent.
        """
        self._ready_to_send()
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
