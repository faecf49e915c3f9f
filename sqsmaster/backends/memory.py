"""``LocalQueue``: an in-memory queue with SQS semantics, for tests and single-process use.

Unlike sqstaskmaster's LocalQueue it models what makes SQS hard: visibility
timeouts (per queue and per receive), redelivery with ``ApproximateReceiveCount``,
``change_visibility``, per-message delays, long polls, and redrive to a
dead-letter queue after ``maxReceiveCount``. It is thread-safe (one lock and
condition per queue) but lives in one process.

``LocalQueue(url)`` returns the same instance for the same URL and class, so a
producer and a consumer in one process meet; ``LocalQueue.reset()`` forgets them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import LeaseLost
from ..limits import MAX_VISIBILITY_TIMEOUT
from .base import Message, QueueBackend, SendEntry

#: How many handles of deleted messages a LocalQueue remembers, so a repeated delete succeeds.
_DELETED_HANDLES_KEPT = 10_000


@dataclass
class _Record:
    message_id: str
    body: str
    message_attributes: dict[str, dict[str, Any]]
    sent_timestamp: int
    visible_at: float
    group_id: str | None = None
    receive_count: int = 0
    first_receive_timestamp: int | None = None
    receipt_handle: str | None = None
    lease_started: float = 0.0
    delayed: bool = False
    old_handles: set[str] = field(default_factory=set)


class _LocalQueues:
    """``LocalQueue.local_queues``: sqstaskmaster's class-level dict of queues by URL, as a read-only view
    whose ``clear()`` forgets them (sqstaskmaster tests call it in ``setUp``/``tearDown``)."""

    def __get__(self, instance: Any, owner: type["LocalQueue"]) -> "_LocalQueuesView":
        return _LocalQueuesView(owner)


class _LocalQueuesView:
    def __init__(self, owner: type["LocalQueue"]) -> None:
        self._owner = owner

    def _queues(self) -> dict[str, "LocalQueue"]:
        with self._owner._registry_lock:
            return {url: queue for (kind, url), queue in self._owner._registry.items() if kind is self._owner}

    def clear(self) -> None:
        self._owner.reset()

    def __getitem__(self, url: str) -> "LocalQueue":
        return self._queues()[url]

    def __contains__(self, url: object) -> bool:
        return url in self._queues()

    def __iter__(self) -> Any:
        return iter(self._queues())

    def __len__(self) -> int:
        return len(self._queues())


class LocalQueue(QueueBackend):
    """An in-memory SQS queue. ``url`` is any string (``mem://NAME`` by convention).

    Keyword arguments set queue attributes: ``visibility_timeout`` (default 30),
    ``delay_seconds`` (0), ``redrive_policy`` (``{"deadLetterTargetArn": arn,
    "maxReceiveCount": n}``; a dead-letter queue is another LocalQueue, named by
    its ``arn``). ``clock`` (monotonic seconds) can be injected for tests.
    """

    process_local = True
    _registry: ClassVar[dict[tuple[type, str], "LocalQueue"]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    #: The queues of this class by URL (sqstaskmaster's name); ``LocalQueue.local_queues.clear()`` = ``reset()``.
    local_queues: ClassVar[Any] = _LocalQueues()
    _initialised: bool

    def __new__(cls, url: str, **attributes: Any) -> "LocalQueue":
        with cls._registry_lock:
            existing = cls._registry.get((cls, url))
            if existing is None:
                existing = super().__new__(cls)
                existing._initialised = False
                cls._registry[(cls, url)] = existing
            return existing

    def __init__(self, url: str, *, visibility_timeout: int = 30, delay_seconds: int = 0,
                 redrive_policy: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if self._initialised:
            return
        self._initialised = True
        self.url = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]
        self.arn = f"arn:aws:sqs:local:000000000000:{self.name}"
        self.visibility_timeout = visibility_timeout
        self.delay_seconds = delay_seconds
        self.redrive_policy = redrive_policy
        self.fifo = self.name.endswith(".fifo")
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._by_handle: dict[str, _Record] = {}
        # Handles of deleted messages (the newest, bounded), so deleting twice succeeds as on SQS.
        self._deleted_handles: dict[str, None] = {}
        self._condition = threading.Condition()
        self._sequence = itertools.count()
        self._created = int(time.time())

    @classmethod
    def reset(cls) -> None:
        """Forget every LocalQueue of this class (and its subclasses), so tests start clean."""
        with cls._registry_lock:
            for key in [k for k in cls._registry if issubclass(k[0], cls)]:
                del cls._registry[key]

    @classmethod
    def _by_arn(cls, arn: str) -> "LocalQueue | None":
        with cls._registry_lock:
            return next((q for q in cls._registry.values() if q.arn == arn), None)

    # -- the backend interface -------------------------------------------------------------

    def send(self, entry: SendEntry) -> dict[str, Any]:
        now = self._clock()
        delay = entry.delay_seconds or self.delay_seconds
        record = _Record(
            message_id=str(uuid.uuid4()), body=entry.body,
            message_attributes=dict(entry.message_attributes), sent_timestamp=int(time.time() * 1000),
            visible_at=now + delay, group_id=entry.group_id, delayed=delay > 0,
        )
        with self._condition:
            self._records[record.message_id] = record
            self._condition.notify_all()
        return {"MessageId": record.message_id, "MD5OfMessageBody": hashlib.md5(entry.body.encode()).hexdigest()}

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        successful = [{"Id": entry.id, **self.send(entry)} for entry in entries]
        return {"Successful": successful, "Failed": []}

    def receive(self, max_messages: int = 1, wait_time: int = 0,
                visibility_timeout: int | None = None) -> list[Message]:
        timeout = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        deadline = self._clock() + wait_time
        with self._condition:
            while True:
                now = self._clock()
                taken = self._take_visible(now, max_messages, timeout)
                if taken or now >= deadline:
                    return [self._to_message(record, timeout, now) for record in taken]
                self._condition.wait(min(deadline - now, self._next_visible(now) - now, 0.25))

    def change_visibility(self, receipt_handle: str, visibility_timeout: int,
                          message_id: str | None = None) -> None:
        with self._condition:
            record = self._leased(receipt_handle, message_id)
            now = self._clock()
            if now + visibility_timeout - record.lease_started > MAX_VISIBILITY_TIMEOUT:
                raise LeaseLost(record.message_id, "InvalidParameterValue",
                                f"visibility would pass {MAX_VISIBILITY_TIMEOUT}s since receipt")
            record.visible_at = now + visibility_timeout
            if visibility_timeout == 0:
                self._condition.notify_all()

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        with self._condition:
            record = self._by_handle.get(receipt_handle)
            if record is None:
                if receipt_handle in self._deleted_handles:
                    return  # deleting a deleted message succeeds: delete is idempotent
                raise LeaseLost(message_id, "ReceiptHandleIsInvalid", "no such receipt handle")
            # Like SQS: a handle from an earlier receive "succeeds" but deletes nothing.
            if record.receipt_handle == receipt_handle:
                self._forget(record)
                self._deleted_handles[receipt_handle] = None
                if len(self._deleted_handles) > _DELETED_HANDLES_KEPT:
                    self._deleted_handles.pop(next(iter(self._deleted_handles)))

    def get_attributes(self) -> dict[str, str]:
        with self._condition:
            now = self._clock()
            visible = in_flight = delayed = 0
            for record in self._records.values():
                if record.visible_at <= now:
                    visible += 1
                elif record.receive_count == 0 and record.delayed:
                    delayed += 1
                else:
                    in_flight += 1
        attributes = {
            "QueueArn": self.arn,
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            "ApproximateNumberOfMessagesDelayed": str(delayed),
            "CreatedTimestamp": str(self._created),
            "LastModifiedTimestamp": str(self._created),
            "VisibilityTimeout": str(self.visibility_timeout),
            "MaximumMessageSize": "1048576",
            "MessageRetentionPeriod": "345600",
            "DelaySeconds": str(self.delay_seconds),
            "ReceiveMessageWaitTimeSeconds": "0",
        }
        if self.fifo:
            attributes["FifoQueue"] = "true"
        if self.redrive_policy:
            policy = dict(self.redrive_policy)
            target = LocalQueue._by_arn(str(policy.get("deadLetterTargetArn")))
            if target is not None:
                policy["deadLetterTargetUrl"] = target.url
            attributes["RedrivePolicy"] = json.dumps(policy)
        return attributes

    def purge(self) -> None:
        with self._condition:
            self._records.clear()
            self._by_handle.clear()

    # -- boto3 Queue-style aliases, so sqstaskmaster-era code keeps working ------------------

    @property
    def attributes(self) -> dict[str, str]:
        return self.get_attributes()

    def load(self) -> None:
        """No-op: attributes are always current."""

    def send_message(self, MessageBody: str, MessageAttributes: dict | None = None,  # noqa: N803
                     DelaySeconds: int = 0, **_: Any) -> dict[str, Any]:
        return self.send(SendEntry(MessageBody, MessageAttributes or {}, DelaySeconds))

    def receive_messages(self, MaxNumberOfMessages: int = 1, WaitTimeSeconds: int = 0,  # noqa: N803
                         VisibilityTimeout: int | None = None, **_: Any) -> list[Message]:
        return self.receive(MaxNumberOfMessages, WaitTimeSeconds, VisibilityTimeout)

    # -- internals --------------------------------------------------------------------------

    def _take_visible(self, now: float, max_messages: int, timeout: int) -> list[_Record]:
        taken: list[_Record] = []
        busy_groups = ({r.group_id for r in self._records.values() if r.visible_at > now and r.receive_count}
                       if self.fifo else set())
        for record in list(self._records.values()):
            if len(taken) >= max_messages:
                break
            if record.visible_at > now:
                continue
            if self.fifo and record.group_id in busy_groups:
                continue  # FIFO: one group's messages wait while an earlier one is in flight
            if self._redrive(record):
                continue
            record.receive_count += 1
            record.delayed = False
            if record.first_receive_timestamp is None:
                record.first_receive_timestamp = int(time.time() * 1000)
            if record.receipt_handle is not None:
                record.old_handles.add(record.receipt_handle)
            record.receipt_handle = f"{record.message_id}#{next(self._sequence)}"
            self._by_handle[record.receipt_handle] = record
            record.visible_at = now + timeout
            record.lease_started = now
            if self.fifo:
                busy_groups.add(record.group_id)
            taken.append(record)
        return taken

    def _redrive(self, record: _Record) -> bool:
        """Move a message received ``maxReceiveCount`` times to the DLQ instead of delivering it."""
        policy = self.redrive_policy
        if not policy or record.receive_count < int(policy["maxReceiveCount"]):
            return False
        target = LocalQueue._by_arn(policy["deadLetterTargetArn"])
        if target is None:
            return False
        self._forget(record)
        target._adopt(record)
        return True

    def _adopt(self, record: _Record) -> None:
        with self._condition:
            record.visible_at = self._clock()
            record.receipt_handle = None
            self._records[record.message_id] = record
            self._condition.notify_all()

    def _forget(self, record: _Record) -> None:
        self._records.pop(record.message_id, None)
        for handle in record.old_handles | {record.receipt_handle or ""}:
            self._by_handle.pop(handle, None)
        record.old_handles = set()

    def _leased(self, receipt_handle: str, message_id: str | None) -> _Record:
        record = self._by_handle.get(receipt_handle)
        if record is None or record.message_id not in self._records:
            raise LeaseLost(message_id, "ReceiptHandleIsInvalid", "no such receipt handle")
        if record.receipt_handle != receipt_handle or record.visible_at <= self._clock():
            raise LeaseLost(record.message_id, "MessageNotInflight", "the message is not in flight for this handle")
        return record

    def _next_visible(self, now: float) -> float:
        return min((r.visible_at for r in self._records.values() if r.visible_at > now), default=now + 3600)

    def _to_message(self, record: _Record, timeout: int, now: float) -> Message:
        attributes = {
            "SenderId": "local",
            "SentTimestamp": str(record.sent_timestamp),
            "ApproximateReceiveCount": str(record.receive_count),
            "ApproximateFirstReceiveTimestamp": str(record.first_receive_timestamp),
        }
        if record.group_id is not None:
            attributes["MessageGroupId"] = record.group_id
        return Message(self, record.message_id, record.receipt_handle or "", record.body, attributes,
                       {k: dict(v) for k, v in record.message_attributes.items()}, timeout, now)
