"""Producing: turn a task call into a checked :class:`~sqsmaster.backends.SendEntry`."""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends import SendEntry
from .encoding import encode_task
from .errors import ConfigurationError, MessageTooLarge
from .limits import MAX_MESSAGE_SIZE, check_delay, check_fifo_id, check_message_attributes, check_text, message_size

if TYPE_CHECKING:
    from .payloads import PayloadStore

#: The message attribute naming the sender, as sqstaskmaster sets it.
SENDER_ATTRIBUTE = "service_name"


@dataclass(frozen=True, init=False)
class TaskCall:
    """One call of a task to submit: its name, its keyword arguments and the per-message options.

    ``TaskCall("resize", {"path": p}, countdown=3600)``. The options never mix with the
    task's own keyword arguments, which stay in ``kwargs``. (Named apart from ``@task``, which
    declares a task a worker runs; ``Task``, its old name, is a deprecated alias.)

    :param delay_seconds: hide the message this long first (0-900, SQS's native delay)
    :param countdown: run no earlier than this many seconds from now (any length; see :mod:`sqsmaster.delays`)
    :param eta: run no earlier than this datetime (a naive one is local time)
    :param group_id: FIFO queues: the ordering lane (default: the task name)
    :param deduplication_id: FIFO queues: a second message with the same id within 5 minutes is dropped
    """

    name: str
    kwargs: dict[str, Any]
    delay_seconds: int
    group_id: str | None
    deduplication_id: str | None
    eta: datetime.datetime | None
    countdown: float | None

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None, *, delay_seconds: int = 0,
                 group_id: str | None = None, deduplication_id: str | None = None,
                 eta: datetime.datetime | None = None, countdown: float | None = None) -> None:
        # Written out (not dataclass(kw_only=...)) so the keyword-only options work on Python 3.9.
        for attribute, value in (("name", name), ("kwargs", {} if kwargs is None else kwargs),
                                 ("delay_seconds", delay_seconds), ("group_id", group_id),
                                 ("deduplication_id", deduplication_id), ("eta", eta), ("countdown", countdown)):
            object.__setattr__(self, attribute, value)


def as_task(item: Any, index: int) -> TaskCall:
    """A :class:`TaskCall` from a ``TaskCall`` or a ``(name, kwargs)`` pair; ``index`` names the item in errors."""
    if isinstance(item, TaskCall):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict):
        return TaskCall(item[0], item[1])
    raise ConfigurationError(f"task #{index} must be a TaskCall or a (name, kwargs) pair, not {item!r:.100}")


def sender_attributes(sender_name: str | None, url: str) -> dict[str, dict[str, str]]:
    """The ``service_name`` attribute (sqstaskmaster's default when no sender is named)."""
    value = sender_name or f"Unknown sender to: {url}"
    check_text("sender_name", value)
    return {SENDER_ATTRIBUTE: {"StringValue": value, "DataType": "String"}}


def attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    """Check ``attributes`` once and return the bytes they add to every message that carries them."""
    check_message_attributes(attributes)
    return message_size("", attributes)


def plain_entry(task: str, kwargs: dict[str, Any], attributes: dict[str, dict[str, str]], size_of_attributes: int,
                entry_id: str) -> SendEntry:
    """:func:`build_entry` for a task with no per-message option, whose attributes :func:`attributes_size` checked.

    The fast path of ``submit_many``, which runs once per message. Raises EncodeError or MessageTooLarge.
    """
    body = encode_task(task, kwargs)
    # json.dumps escapes every non-ASCII character, so the length is the UTF-8 size; isascii() is a C scan.
    size = (len(body) if body.isascii() else len(body.encode("utf-8"))) + size_of_attributes
    if size > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(size, MAX_MESSAGE_SIZE, task)
    return SendEntry(body, attributes, 0, None, None, entry_id)


def build_entry(task: str, kwargs: dict[str, Any], attributes: dict[str, dict[str, str]], *,
                delay_seconds: int = 0, group_id: str | None = None, deduplication_id: str | None = None,
                entry_id: str = "0", payloads: "PayloadStore | None" = None) -> SendEntry:
    """Encode and check one message; raises EncodeError, MessageTooLarge or LimitExceeded before any send.

    With ``payloads``, a message over its threshold has its body stored in S3 and
    carries a pointer instead (see :mod:`sqsmaster.payloads`).
    """
    body = encode_task(task, kwargs)
    check_message_attributes(attributes)
    delay = check_delay(delay_seconds)
    group_id = check_fifo_id("group_id", group_id)
    deduplication_id = check_fifo_id("deduplication_id", deduplication_id)
    size = message_size(body, attributes)
    if payloads is not None and size > payloads.threshold:
        body, attributes = payloads.offload(body, attributes)
        check_message_attributes(attributes)
        size = message_size(body, attributes)
    if size > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(size, MAX_MESSAGE_SIZE, task)
    return SendEntry(body, attributes, delay, group_id, deduplication_id, entry_id)


def copy_entry(message: Any, entry_id: str = "0", *, delay_seconds: int = 0) -> SendEntry:
    """A send entry that copies a received message: the body it was sent with (an S3 pointer stays a
    pointer, see ``sent_body`` in :mod:`sqsmaster.payloads`) and its message attributes; on FIFO its
    group, deduplicated by the original message id. What a dead-letter queue or a re-send must keep."""
    attributes = {name: {key: value for key, value in attribute.items()
                         if key in ("DataType", "StringValue", "BinaryValue")}
                  for name, attribute in (getattr(message, "message_attributes", None) or {}).items()
                  if isinstance(attribute, dict)}
    group = (getattr(message, "attributes", None) or {}).get("MessageGroupId")
    body = getattr(message, "sent_body", None) or message.body
    return SendEntry(body, attributes, delay_seconds=delay_seconds, group_id=group,
                     deduplication_id=message.message_id if group else None, id=entry_id)


def __getattr__(name: str) -> Any:
    if name == "Task":
        warnings.warn("sqsmaster.Task is deprecated (removed in 0.2): use sqsmaster.TaskCall, the same class",
                      DeprecationWarning, stacklevel=2)
        return TaskCall
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
