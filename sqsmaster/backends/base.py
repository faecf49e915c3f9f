"""The one narrow interface every queue backend implements, mirroring the SQS verbs.

A backend is any object with these methods; :class:`QueueBackend` documents the
contract and gives the shared helpers. Receipt handles are opaque strings; a
message is returned as a :class:`Message`, which behaves like boto3's ``sqs.Message``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import LeaseLost


@dataclass(frozen=True)
class SendEntry:
    """One message to send: the body, its attributes and per-message options."""

    body: str
    message_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    delay_seconds: int = 0
    group_id: str | None = None
    deduplication_id: str | None = None
    id: str = "0"


class Message:
    """A received message; the same surface as boto3's ``sqs.Message``.

    ``change_visibility`` and ``delete`` go to the queue the message came from.
    ``received_at`` (monotonic) and ``visibility_timeout`` tell how long the lease
    lasts (set by the receive, or by a later change recorded with :meth:`leased`),
    so a handler can skip a redundant extension.
    """

    def __init__(
        self,
        queue: "QueueBackend",
        message_id: str,
        receipt_handle: str,
        body: str,
        attributes: dict[str, str] | None = None,
        message_attributes: dict[str, dict[str, Any]] | None = None,
        visibility_timeout: float | None = None,
        received_at: float | None = None,
    ) -> None:
        self.queue = queue
        self.message_id = message_id
        self.receipt_handle = receipt_handle
        self.body = body
        self.attributes = attributes or {}
        self.message_attributes = message_attributes or {}
        self.visibility_timeout = visibility_timeout
        self.received_at = time.monotonic() if received_at is None else received_at
        #: True once the message was deleted through :meth:`delete` (or :meth:`mark_deleted`).
        self.deleted = False
        self._after_delete: list[Callable[[Message], None]] = []

    def leased(self, seconds: float, at: float) -> None:
        """Record a visibility change made since the receive: hidden ``seconds`` from ``at`` (monotonic, taken
        before the call was sent, so the lease is never thought to last longer than it does)."""
        self.visibility_timeout = at + seconds - self.received_at

    @property
    def queue_url(self) -> str:
        return self.queue.url

    @property
    def receive_count(self) -> int:
        """``ApproximateReceiveCount`` as an int (1 on the first delivery)."""
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    def change_visibility(self, VisibilityTimeout: int) -> None:  # noqa: N803 (boto3's name)
        """Hide the message for ``VisibilityTimeout`` seconds from now. Raises LeaseLost."""
        self.queue.change_visibility(self.receipt_handle, VisibilityTimeout, message_id=self.message_id)

    def delete(self) -> None:
        """Delete the message from its queue, then run the :meth:`after_delete` callbacks."""
        self.queue.delete(self.receipt_handle, message_id=self.message_id)
        self.mark_deleted()

    def after_delete(self, callback: "Callable[[Message], None]") -> None:
        """Call ``callback(message)`` once the message is deleted (e.g. to remove an offloaded payload).

        Callbacks must not raise. Code that deletes through ``queue.delete_batch``
        calls :meth:`mark_deleted` for each message deleted.
        """
        self._after_delete.append(callback)

    def mark_deleted(self) -> None:
        """Record that the message was deleted and run the :meth:`after_delete` callbacks (once)."""
        if self.deleted:
            return
        self.deleted = True
        for callback in self._after_delete:
            callback(self)

    def __repr__(self) -> str:
        return f"Message(id={self.message_id!r}, queue={self.queue.url!r}, receive_count={self.receive_count})"


class QueueBackend:
    """What every backend provides. Subclasses implement the methods that raise here.

    Errors: a receipt handle that no longer holds the message raises
    :class:`~sqsmaster.errors.LeaseLost`; a missing queue raises
    :class:`~sqsmaster.errors.QueueDoesNotExist`; any other failure of the
    queue raises :class:`~sqsmaster.errors.QueueError`.

    Capabilities: code outside ``backends/`` asks these, never a backend's type or
    its URL's scheme. ``process_local``: the queue lives inside this process (another
    process opening the same URL sees another, empty queue). ``fifo``: messages of a
    group are delivered in order, one at a time, and sends need a group id.
    :meth:`polling_twin` and :meth:`heartbeat_queue` give the handles a receiving
    thread and a heartbeat thread use.
    """

    url: str
    process_local: bool = False
    fifo: bool = False

    def send(self, entry: SendEntry) -> dict[str, Any]:
        """Send one message. Returns at least ``{"MessageId": ...}``. Not idempotent."""
        raise NotImplementedError

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        """Send up to 10 messages. Returns ``{"Successful": [{"Id", "MessageId"}], "Failed": [{"Id", "Code",
        "Message", "SenderFault"}]}``: entries can fail one by one while the call succeeds."""
        raise NotImplementedError

    def receive(self, max_messages: int = 1, wait_time: int = 0,
                visibility_timeout: int | None = None) -> list[Message]:
        """Receive up to ``max_messages``, waiting up to ``wait_time`` s for the first.

        Returns an empty list when nothing became visible in time. Each message is
        hidden for ``visibility_timeout`` (the queue's default when None) and its
        receive count is raised by one.
        """
        raise NotImplementedError

    def change_visibility(self, receipt_handle: str, visibility_timeout: int,
                          message_id: str | None = None) -> None:
        """Hide the message for ``visibility_timeout`` s from now (0 = visible now).

        Idempotent: repeating it with the same value has the same effect, so a
        retried heartbeat is harmless. Raises LeaseLost if the handle is stale.
        """
        raise NotImplementedError

    def change_visibility_batch(self, entries: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
        """Change the visibility of several messages; returns the failed entries (empty if none)."""
        failed = []
        for index, (handle, timeout) in enumerate(entries):
            try:
                self.change_visibility(handle, timeout)
            except Exception as exc:  # report per entry, like SQS's batch call (with SQS's code for a lost lease)
                code = exc.code if isinstance(exc, LeaseLost) else type(exc).__name__
                failed.append({"Id": str(index), "Code": code, "Message": str(exc)})
        return failed

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        """Delete the message. Idempotent: deleting a deleted message succeeds."""
        raise NotImplementedError

    def delete_batch(self, receipt_handles: list[str]) -> list[dict[str, Any]]:
        """Delete up to 10 messages; returns the failed entries (empty if none)."""
        failed = []
        for index, handle in enumerate(receipt_handles):
            try:
                self.delete(handle)
            except Exception as exc:
                failed.append({"Id": str(index), "Code": type(exc).__name__, "Message": str(exc)})
        return failed

    def get_attributes(self) -> dict[str, str]:
        """The queue's attributes as SQS names them (values are strings), including
        ``ApproximateNumberOfMessages``, ``...NotVisible`` and ``...Delayed``."""
        raise NotImplementedError

    def purge(self) -> None:
        """Delete every message in the queue."""
        raise NotImplementedError

    def polling_twin(self, read_timeout: float) -> "QueueBackend":
        """A handle on this queue to receive through, whose every call fails within ``read_timeout``
        seconds and is tried once, so an unreachable endpoint shows fast and the caller's backoff takes
        over. Local queues with nothing to wait on answer with themselves."""
        return self

    def heartbeat_queue(self, timeout: float | None = None) -> "QueueBackend":
        """A handle on this queue for another thread: a client (or connection) of its own.

        The heartbeat thread must never share a connection with the task's code. With
        ``timeout`` (seconds) every call of the twin is bounded by it (connect and read
        timeouts, no hidden retries, a bounded busy wait): supervision must not wait on
        the network. Local queues with nothing to wait on answer with themselves.
        """
        return self

    def close(self) -> None:
        """Release connections. The backend must not be used afterwards."""
