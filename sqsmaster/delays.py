"""Delays past SQS's 15 minutes: ``eta=`` and ``countdown=`` by re-delaying.

SQS delays a message by at most 900 s (``DelaySeconds``). A longer delay is sent
as the longest native delay plus the due time in the message attribute
``sqsmaster_due_at`` (Unix seconds, a Number). A consumer that receives the
message before it is due hands it back, hidden for the time still to wait but
at most 12 hours per hop (SQS's visibility cap): :func:`hold_if_not_due`.
Each hop is one receive, so it raises ``ApproximateReceiveCount``: a message
due in ``d`` seconds is received about ``1 + d / 43200`` times before it runs;
give the queue's redrive policy room for that.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any, Callable

from .errors import ConfigurationError
from .lease import Lease
from .limits import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT

logger = logging.getLogger(__name__)

#: The message attribute holding the due time (Unix seconds) of a re-delayed message.
DUE_ATTRIBUTE = "sqsmaster_due_at"
#: Longest delay sent natively (``DelaySeconds``); module-level so tests can shorten it.
MAX_NATIVE_DELAY: int = MAX_DELAY_SECONDS
#: Longest hop a consumer hides a message that is not due; module-level so tests can shorten it.
MAX_HOP: int = MAX_VISIBILITY_TIMEOUT


def plan_delay(delay_seconds: float = 0, eta: datetime.datetime | None = None, countdown: float | None = None,
               *, native: bool = True, clock: Callable[[], float] = time.time) -> tuple[int, float | None]:
    """``(DelaySeconds, due time or None)`` for one message.

    Give at most one of ``delay_seconds`` (up to 900), ``countdown`` (seconds, any
    length) and ``eta`` (a datetime; a naive one is local time). A wait that fits
    in :data:`MAX_NATIVE_DELAY` is sent natively (rounded up: never early); a longer
    one gets the longest native delay and a due time. With ``native=False`` (FIFO
    queues, which refuse per-message delays) every wait goes through the due time.
    """
    given = [name for name, value in (("delay_seconds", delay_seconds), ("eta", eta), ("countdown", countdown))
             if value]
    if len(given) > 1:
        raise ConfigurationError(f"give one of delay_seconds, eta and countdown, not {' and '.join(given)}")
    if eta is not None:
        if not isinstance(eta, datetime.datetime):
            raise ConfigurationError(f"eta must be a datetime, not {eta!r}")
        wait = eta.timestamp() - clock()
    elif countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)) or countdown < 0:
            raise ConfigurationError(f"countdown must be a number of seconds >= 0, not {countdown!r}")
        wait = float(countdown)
    elif native:
        return int(delay_seconds), None  # checked (0-900) by build_entry
    else:
        wait = float(delay_seconds)
    if wait <= 0:
        return 0, None
    if native and wait <= MAX_NATIVE_DELAY:
        return math.ceil(wait), None
    return (MAX_NATIVE_DELAY if native else 0), clock() + wait


def due_attribute(due: float) -> dict[str, dict[str, str]]:
    """The message attribute carrying a due time."""
    return {DUE_ATTRIBUTE: {"DataType": "Number", "StringValue": f"{due:.3f}"}}


def due_time(message: Any) -> float | None:
    """The due time a message carries (Unix seconds), or None."""
    attribute = (getattr(message, "message_attributes", None) or {}).get(DUE_ATTRIBUTE)
    if not attribute:
        return None
    try:
        return float(attribute.get("StringValue"))
    except (TypeError, ValueError):
        logger.warning("message %s: unreadable %s %r; running it now", getattr(message, "message_id", None),
                       DUE_ATTRIBUTE, attribute)
        return None


def hold_if_not_due(message: Any, clock: Callable[[], float] = time.time) -> bool:
    """If ``message`` is not due yet, hand it back hidden until it is (at most :data:`MAX_HOP` s).

    Returns True when the message was held (the caller must not run it), False
    when it may run now. The hop is rounded up to whole seconds, so a message never
    runs early and the consumer never spins. If the hand-back fails, the message
    comes back when its visibility expires and is held again then.
    """
    due = due_time(message)
    if due is None:
        return False
    remaining = due - clock()
    if remaining <= 0:
        return False
    hop = max(1, math.ceil(min(remaining, MAX_HOP)))
    Lease(message).release(hop)
    logger.debug("message %s: due in %.0fs; hidden for %ss more", getattr(message, "message_id", None),
                 remaining, hop)
    return True
