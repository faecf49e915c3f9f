"""Producing: turn a task call into a checked :class:`~sqsmaster.backends.SendEntry`."""

from __future__ import annotations

from typing import Any

from .backends import SendEntry
from .encoding import encode_task
from .errors import MessageTooLarge
from .limits import MAX_MESSAGE_SIZE, check_delay, check_fifo_id, check_message_attributes, check_text, message_size

#: The message attribute naming the sender, as sqstaskmaster sets it.
SENDER_ATTRIBUTE = "service_name"


def sender_attributes(sender_name: str | None, url: str) -> dict[str, dict[str, str]]:
    """The ``service_name`` attribute (sqstaskmaster's default when no sender is named)."""
    value = sender_name or f"Unknown sender to: {url}"
    check_text("sender_name", value)
    return {SENDER_ATTRIBUTE: {"StringValue": value, "DataType": "String"}}


def build_entry(task: str, kwargs: dict[str, Any], attributes: dict[str, dict[str, str]], *,
                delay_seconds: int = 0, group_id: str | None = None, deduplication_id: str | None = None,
                entry_id: str = "0") -> SendEntry:
    """Encode and check one message; raises EncodeError, MessageTooLarge or LimitExceeded before any send."""
    body = encode_task(task, kwargs)
    check_message_attributes(attributes)
    size = message_size(body, attributes)
    if size > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(size, MAX_MESSAGE_SIZE, task)
    return SendEntry(body, attributes, check_delay(delay_seconds), check_fifo_id("group_id", group_id),
                     check_fifo_id("deduplication_id", deduplication_id), entry_id)
