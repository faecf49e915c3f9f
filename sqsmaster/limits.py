"""Every SQS limit sqsmaster checks on its own side, as named constants.

moto and most SQS-compatible servers accept almost anything; real SQS does not.
Checking here turns a confusing server error (or a silent truncation) into an
error that names the argument and the limit, before anything is sent.
Reference: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
"""

from __future__ import annotations

import math
import re

from .errors import ConfigurationError, LimitExceeded

#: Largest message SQS accepts, body and message attributes together (1 MiB since 2025).
MAX_MESSAGE_SIZE = 1_048_576
#: Most entries in one SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch.
MAX_BATCH_ENTRIES = 10
#: Largest SendMessageBatch payload, all entries together.
MAX_BATCH_SIZE = 1_048_576
#: Longest long poll (ReceiveMessage WaitTimeSeconds).
MAX_WAIT_TIME = 20
#: Most messages one ReceiveMessage returns.
MAX_RECEIVE_MESSAGES = 10
#: Longest visibility timeout, counted from the first receipt of this lease.
MAX_VISIBILITY_TIMEOUT = 43_200
#: Longest per-message delay (DelaySeconds).
MAX_DELAY_SECONDS = 900
#: Most message attributes on one message.
MAX_MESSAGE_ATTRIBUTES = 10
#: Longest FIFO MessageGroupId / MessageDeduplicationId.
MAX_FIFO_ID_LENGTH = 128
#: Longest queue name, a FIFO queue's ``.fifo`` suffix included.
MAX_QUEUE_NAME_LENGTH = 80

# A queue name: alphanumerics, hyphens and underscores, and a FIFO queue's ".fifo" suffix.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.fifo)?")

# SQS accepts #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF only.
_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``value`` if ``low <= value <= high``, else raise :class:`LimitExceeded`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    if not low <= value <= high:
        raise LimitExceeded(name, value, f"[{low}, {high}]")
    return value


def check_seconds(name: str, value: float, *, minimum: float = 0.0, allow_minimum: bool = False) -> float:
    """Return ``value``, a finite number of seconds above ``minimum`` (or equal, with ``allow_minimum``).

    For our own settings (a hard timeout, a grace period), not SQS limits: the error says so.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < minimum or (value == minimum and not allow_minimum):
        bound = f">= {minimum:g}" if allow_minimum else f"> {minimum:g}"
        raise ConfigurationError(f"{name}={value!r}: must be a finite number of seconds {bound}")
    return value


def check_wait_time(wait_time: float) -> int:
    """Long-poll wait: whole seconds in [0, 20]."""
    check_range("wait_time", wait_time, 0, MAX_WAIT_TIME)
    return int(wait_time)


def check_visibility_timeout(name: str, seconds: float) -> int:
    """Visibility timeout: whole seconds in [0, 43200]."""
    check_range(name, seconds, 0, MAX_VISIBILITY_TIMEOUT)
    return int(seconds)


def check_queue_name(name: str) -> str:
    """A name CreateQueue accepts: 1 to 80 alphanumerics, hyphens and underscores (``.fifo`` included)."""
    if not _QUEUE_NAME.fullmatch(name):
        raise ConfigurationError(f"queue name {name!r}: SQS takes only alphanumeric characters, hyphens and "
                                 "underscores (and a final .fifo for a FIFO queue)")
    if len(name) > MAX_QUEUE_NAME_LENGTH:
        raise LimitExceeded("queue name length", len(name), f"[1, {MAX_QUEUE_NAME_LENGTH}]",
                            f"{name!r} is {len(name)} characters; SQS takes at most {MAX_QUEUE_NAME_LENGTH} "
                            "alphanumeric characters, hyphens and underscores")
    return name


def check_delay(delay_seconds: float) -> int:
    """Per-message delay: whole seconds in [0, 900]."""
    check_range("delay_seconds", delay_seconds, 0, MAX_DELAY_SECONDS)
    return int(delay_seconds)


def check_max_messages(max_messages: int) -> int:
    """Messages per receive: 1 to 10."""
    if isinstance(max_messages, bool) or not isinstance(max_messages, int):
        raise ConfigurationError(f"max_messages must be an int, not {max_messages!r}")
    if not 1 <= max_messages <= MAX_RECEIVE_MESSAGES:
        raise LimitExceeded("max_messages", max_messages, f"[1, {MAX_RECEIVE_MESSAGES}]")
    return max_messages


def check_text(name: str, text: str) -> str:
    """Reject characters SQS refuses (U+0000 and other control characters, lone surrogates)."""
    bad = _INVALID_CHARS.search(text)
    if bad:
        raise LimitExceeded(
            name, f"...{text[max(0, bad.start() - 10):bad.start() + 10]}...",
            "SQS character set", f"character U+{ord(bad.group()):04X} at index {bad.start()} is not allowed",
        )
    return text


def message_size(body: str, message_attributes: dict[str, dict[str, str]] | None) -> int:
    """Size SQS counts for a message: the UTF-8 body plus each attribute's name, type and value."""
    size = len(body.encode("utf-8"))
    for name, attribute in (message_attributes or {}).items():
        size += len(name.encode("utf-8")) + len(attribute.get("DataType", "").encode("utf-8"))
        value = attribute.get("StringValue")
        if value is not None:
            size += len(value.encode("utf-8"))
        binary = attribute.get("BinaryValue")
        if binary is not None:
            size += len(binary)
    return size


def check_message_attributes(message_attributes: dict[str, dict[str, str]] | None) -> None:
    """At most 10 attributes, each with a DataType and a value in SQS's character set."""
    if not message_attributes:
        return
    if len(message_attributes) > MAX_MESSAGE_ATTRIBUTES:
        raise LimitExceeded("message_attributes", len(message_attributes), MAX_MESSAGE_ATTRIBUTES,
                            "too many message attributes")
    for name, attribute in message_attributes.items():
        if "DataType" not in attribute:
            raise ConfigurationError(f"message attribute {name!r} has no DataType")
        value = attribute.get("StringValue")
        if value is not None:
            check_text(f"message attribute {name!r}", value)


def check_fifo_id(name: str, value: str | None) -> str | None:
    """MessageGroupId / MessageDeduplicationId: 1-128 printable ASCII characters."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_FIFO_ID_LENGTH or not all(33 <= ord(c) <= 126 for c in value):
        raise LimitExceeded(name, value, f"1-{MAX_FIFO_ID_LENGTH} printable ASCII characters")
    return value


#: After a failed heartbeat, try again this soon (seconds) instead of a full alarm period.
HEARTBEAT_RETRY_DELAY = 1.0
#: Bounds on one heartbeat call (seconds): the lease margin, within these.
MIN_CALL_TIMEOUT = 1.0
MAX_CALL_TIMEOUT = 10.0


def heartbeat_call_timeout(sqs_timeout: float, alarm_timeout: float) -> float:
    """How long one heartbeat call may take: the lease margin (``sqs_timeout - alarm_timeout``, what a
    lease has left when a heartbeat is due), within [1, 10] s. A slow answer (a loaded server) still
    counts while the lease lasts; past it, waiting longer would not save the lease."""
    return min(MAX_CALL_TIMEOUT, max(MIN_CALL_TIMEOUT, sqs_timeout - alarm_timeout))
