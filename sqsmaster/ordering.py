"""FIFO order inside one receive batch: a failed message holds back the rest of its group.

SQS hands a FIFO group's messages out in order, several per receive. If one of
them fails and is handed back with a backoff, the later messages of its group
from the same receive must not run before it: they are released (visible
again at once). SQS keeps them behind the failed message, which is still in
flight, so the group resumes in order when it comes back.
"""

from __future__ import annotations

import logging
from typing import Any

from .lease import Lease

logger = logging.getLogger(__name__)


def group_of(message: Any) -> str | None:
    """The message's ``MessageGroupId`` (None on a standard queue)."""
    return (getattr(message, "attributes", None) or {}).get("MessageGroupId")


class GroupOrder:
    """Per-group order for the messages of one receive; make one per receive.

    For each message, in receive order: call :meth:`admit` before running it
    (False: skip it, it was released) and :meth:`settle` once it has ended.
    """

    def __init__(self) -> None:
        self._failed_groups: set[str] = set()

    def admit(self, message: Any) -> bool:
        """True if ``message`` may run; False (and released now) if an earlier one of its group failed."""
        group = group_of(message)
        if group is None or group not in self._failed_groups:
            return True
        Lease(message).release(0)
        logger.info("message %s: released unrun, an earlier message of group %r failed",
                    getattr(message, "message_id", None), group)
        return False

    def settle(self, message: Any, succeeded: bool) -> None:
        """Record how ``message`` ended; a message that did not succeed holds back the rest of its group."""
        group = group_of(message)
        if group is not None and not succeeded:
            self._failed_groups.add(group)
