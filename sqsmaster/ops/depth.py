"""A queue's depth as SQS reports it: visible, in flight and delayed (approximate counts), for scaling.

One GetQueueAttributes per queue per call, bounded so that a scaling round ends on a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from ..backends import QueueBackend, is_process_local, open_queue
from ..errors import ConfigurationError, SqsMasterError

#: SQS's names for the three approximate counts a queue reports.
VISIBLE = "ApproximateNumberOfMessages"
IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
DELAYED = "ApproximateNumberOfMessagesDelayed"


class DepthUnknown(SqsMasterError):
    """A queue's attributes lack one of the three counts: its depth is unknown, so nothing is scaled."""


@dataclass(frozen=True)
class QueueDepth:
    """A queue's (or several queues', summed) approximate visible, in-flight and delayed message counts."""

    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    def __add__(self, other: "QueueDepth") -> "QueueDepth":
        return QueueDepth(self.visible + other.visible, self.in_flight + other.in_flight,
                          self.delayed + other.delayed)

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any], url: str) -> "QueueDepth":
        """From GetQueueAttributes' answer. Raises DepthUnknown when a count is missing or not a number
        (sqstaskmaster let that KeyError out of its ``run()``)."""
        counts = []
        for name in (VISIBLE, IN_FLIGHT, DELAYED):
            try:
                counts.append(int(attributes[name]))
            except (KeyError, TypeError, ValueError):
                raise DepthUnknown(f"{url}: GetQueueAttributes gave no count {name} ({attributes.get(name)!r}); "
                                   "not scaling on an unknown depth") from None
        return cls(*counts)


#: Bounds on one GetQueueAttributes (s, attempts): a scaling round ends within about 30 s on a partition,
#: and the next round tries again (botocore's default would wait 60 s per attempt, four times).
DEPTH_CONNECT_TIMEOUT = 5
DEPTH_READ_TIMEOUT = 10
DEPTH_ATTEMPTS = 2


def open_depth_queue(url: str, client: Any = None) -> QueueBackend:
    """The queue ``url`` for reading its depth (never created). An SQS URL with no ``client`` gets one whose
    calls are bounded (see DEPTH_READ_TIMEOUT). Raises ConfigurationError for a ``mem://`` queue, which lives
    inside one process: its depth says nothing about a fleet."""
    if is_process_local(url):
        raise ConfigurationError(f"{url}: a mem:// queue lives inside one process; a fleet cannot be scaled on it")
    if client is None and urlsplit(url).scheme in ("http", "https"):
        from ..backends.sqs import make_client

        client = make_client(url, read_timeout=DEPTH_READ_TIMEOUT, connect_timeout=DEPTH_CONNECT_TIMEOUT,
                             max_attempts=DEPTH_ATTEMPTS)
    return open_queue(url, client=client, create=False)


def read_depth(queues: Iterable[QueueBackend]) -> QueueDepth:
    """The summed depth of ``queues``: one GetQueueAttributes each. Raises QueueDoesNotExist, QueueError,
    DepthUnknown."""
    total = QueueDepth()
    for queue in queues:
        total = total + QueueDepth.from_attributes(queue.get_attributes(), queue.url)
    return total
