"""Queue options read from a durable local queue's URL query string (``sqlite://``, ``fq://``).

``?visibility_timeout=30&delay_seconds=0&max_receive_count=3&dead_letter=NAME`` set the
queue's attributes when the queue is created, as SQS's CreateQueue does; opening an
existing queue with other values raises :class:`~sqsmaster.errors.ConfigurationError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl

from ..errors import ConfigurationError
from ..limits import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT, check_range

#: Defaults as SQS has them.
DEFAULT_VISIBILITY_TIMEOUT = 30
#: How often a long poll looks again when nothing is visible (seconds).
POLL_INTERVAL = 0.05
#: SQS's bounds on maxReceiveCount in a redrive policy.
MAX_RECEIVE_COUNT = 1000


@dataclass(frozen=True)
class QueueOptions:
    """The attributes a durable local queue is created with.

    ``max_receive_count`` > 0 turns on redrive: a message received that many times
    moves to ``dead_letter`` (a queue name for ``sqlite://``, a directory for ``fq://``)
    on its next receive instead of being delivered.
    """

    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    delay_seconds: int = 0
    max_receive_count: int = 0
    dead_letter: str | None = None

    def redrive(self) -> bool:
        return self.max_receive_count > 0 and bool(self.dead_letter)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def split_query(query: str, allowed: set[str]) -> dict[str, str]:
    """The query string as a dict; an unknown key, or one given twice, raises ConfigurationError naming it."""
    pairs = parse_qsl(query, keep_blank_values=True)
    params = dict(pairs)
    if len(params) < len(pairs):  # dict() keeps the last: a typo would silently pick another queue
        twice = sorted({key for key, _ in pairs if sum(1 for other, _ in pairs if other == key) > 1})
        raise ConfigurationError(f"queue URL option {twice[0]!r} given twice; give each option once")
    unknown = set(params) - allowed
    if unknown:
        raise ConfigurationError(f"unknown queue URL option(s) {sorted(unknown)}; known: {sorted(allowed)}")
    return params


OPTION_NAMES = {f.name for f in fields(QueueOptions)}


def _whole(params: dict[str, str], name: str, default: int) -> int:
    """The URL option ``name`` as a whole number; ConfigurationError naming it when it is not one."""
    text = params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"queue URL option {name}={text!r} must be a whole number") from None


def parse_options(params: dict[str, str], default_dead_letter: str) -> tuple[QueueOptions, set[str]]:
    """QueueOptions from URL parameters, and the names the URL gave explicitly.

    ``max_receive_count`` without ``dead_letter`` sends dead letters to ``default_dead_letter``.
    """
    given = OPTION_NAMES & set(params)
    visibility = _whole(params, "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)
    delay = _whole(params, "delay_seconds", 0)
    max_receive = _whole(params, "max_receive_count", 0)
    check_range("visibility_timeout", visibility, 0, MAX_VISIBILITY_TIMEOUT)
    check_range("delay_seconds", delay, 0, MAX_DELAY_SECONDS)
    check_range("max_receive_count", max_receive, 0, MAX_RECEIVE_COUNT)
    dead_letter = params.get("dead_letter") or (default_dead_letter if max_receive else None)
    if dead_letter and not max_receive:
        raise ConfigurationError("dead_letter needs max_receive_count (how many receives before a message moves)")
    if dead_letter:
        given.add("dead_letter")
    return QueueOptions(visibility, delay, max_receive, dead_letter), given


def check_same(url: str, stored: QueueOptions, wanted: QueueOptions, given: set[str]) -> None:
    """Raise ConfigurationError if the URL asks for options other than the existing queue's."""
    for name in sorted(given):
        if getattr(stored, name) != getattr(wanted, name):
            raise ConfigurationError(
                f"queue {url} already exists with {name}={getattr(stored, name)!r}, not {getattr(wanted, name)!r}; "
                "options apply when a queue is created (use a new queue)")


def queue_attributes(arn: str, visible: int, in_flight: int, delayed: int, options: QueueOptions,
                     dead_letter_arn: str, dead_letter_url: str | None, **extra: str) -> dict[str, str]:
    """A durable local queue's attributes under SQS's names (values are strings, as SQS returns them).

    With redrive on, ``RedrivePolicy`` also carries ``deadLetterTargetUrl``: local
    queues cannot be found from an ARN the way SQS queues can.
    """
    attributes = {
        "QueueArn": arn,
        "ApproximateNumberOfMessages": str(visible),
        "ApproximateNumberOfMessagesNotVisible": str(in_flight),
        "ApproximateNumberOfMessagesDelayed": str(delayed),
        **extra,
        "VisibilityTimeout": str(options.visibility_timeout),
        "DelaySeconds": str(options.delay_seconds),
        "MaximumMessageSize": "1048576",
        "ReceiveMessageWaitTimeSeconds": "0",
    }
    if options.redrive():
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dead_letter_arn,
                                                  "maxReceiveCount": options.max_receive_count,
                                                  "deadLetterTargetUrl": dead_letter_url})
    return attributes
