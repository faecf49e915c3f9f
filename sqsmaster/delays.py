"""Delays past SQS's 15 minutes: ``eta=`` and ``countdown=`` by re-delaying.

SQS delays a message by at most 900 s (``DelaySeconds``). A longer delay is sent
as the longest native delay plus the due time in the message attribute
``sqsmaster_due_at`` (Unix seconds, a Number). A consumer that receives the
message before it is due waits it out (:func:`hold_if_not_due`, planned by
:func:`plan_wait`) without spending the message's receives, so neither the
redrive policy nor the retry count ever sees the wait:

- the last 15 minutes (and any wait past what a hold can do) go by a *re-send*:
  a copy with the remaining delay (native ``DelaySeconds``, and the due time),
  then the delete of the original (send before delete: a crash between them
  leaves a duplicate, never a loss). The copy starts again at receive count 1;
- before that, a *hold* hides the message (visibility) until 15 minutes before
  it is due, at most until 12 hours after its receipt (SQS's cap counts from the
  receipt), and only while its next receive cannot be the one the redrive
  policy moves it on.

A due time that is not a finite number makes the message malformed (it goes
down the dead-letter path); FIFO queues have no per-message delay, so there a
message is only ever held (each hold is one receive: give their redrive policy
room for ``d / 43200`` of them).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigurationError, MalformedMessage
from .lease import Lease, receive_count
from .limits import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT
from .producer import copy_entry

logger = logging.getLogger(__name__)

#: The message attribute holding the due time (Unix seconds) of a re-delayed message.
DUE_ATTRIBUTE = "sqsmaster_due_at"
#: Longest delay sent natively (``DelaySeconds``); module-level so tests can shorten it.
MAX_NATIVE_DELAY: int = MAX_DELAY_SECONDS
#: Longest a consumer hides a message that is not due, counted from its receipt (SQS's visibility cap);
#: module-level so tests can shorten it.
MAX_HOP: int = MAX_VISIBILITY_TIMEOUT
#: A hold ends this long before the cap: the hand-back call itself takes time, and SQS counts from the
#: receipt on its own clock.
HOLD_MARGIN = 1
#: The receive count a held message may reach when the queue's redrive policy is unknown: a hold is
#: safe under any maxReceiveCount of 2 or more.
SAFE_RECEIVE_COUNT = 2


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
    """The due time a message carries (Unix seconds), or None when it carries none.

    Raises :class:`MalformedMessage` when the attribute is there but is not a finite number
    (``nan``, ``inf``, text, a binary value): such a message cannot be scheduled.
    """
    attributes = getattr(message, "message_attributes", None) or {}
    attribute = attributes.get(DUE_ATTRIBUTE) if isinstance(attributes, dict) else None
    if attribute is None:
        return None
    value = attribute.get("StringValue") if isinstance(attribute, dict) else None
    try:
        due = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        due = math.nan
    if not math.isfinite(due):
        raise MalformedMessage(getattr(message, "message_id", None),
                               f"message attribute {DUE_ATTRIBUTE} is not a finite number: {str(attribute)[:100]}")
    return due


@dataclass(frozen=True)
class Wait:
    """What to do with a message not due yet: ``hold`` it hidden, or ``resend`` a copy, for ``seconds``."""

    action: str
    seconds: int


def plan_wait(remaining: float, received: int, held_since_receipt: float, *, fifo: bool = False,
              max_receive_count: int | None = None) -> Wait:
    """How to wait ``remaining`` seconds for a message received ``received`` times, held for
    ``held_since_receipt`` seconds so far in this receipt.

    A pure function of its arguments (the clock stays with the caller). A hold never asks
    for more visibility than SQS allows from the receipt, and is chosen only while the next
    receive cannot be the one the redrive policy moves the message on (``max_receive_count``;
    unknown: :data:`SAFE_RECEIVE_COUNT`); everything else is a re-send, whose copy starts at
    receive count 1 and arrives when due or 15 minutes before.
    """
    room = int(MAX_HOP - math.ceil(max(held_since_receipt, 0.0))) - HOLD_MARGIN
    if fifo:  # no per-message delay on FIFO queues: holds only, each one receive
        return Wait("hold", max(1, min(math.ceil(remaining), room)))
    if remaining <= MAX_NATIVE_DELAY:
        return Wait("resend", max(1, math.ceil(remaining)))
    limit = max_receive_count or SAFE_RECEIVE_COUNT
    until_last_leg = math.ceil(remaining - MAX_NATIVE_DELAY)
    if received < limit and room >= 1:
        return Wait("hold", min(until_last_leg, room))
    return Wait("resend", MAX_NATIVE_DELAY)


def hold_if_not_due(message: Any, clock: Callable[[], float] = time.time, *, max_receive_count: int | None = None,
                    monotonic: Callable[[], float] = time.monotonic) -> bool:
    """If ``message`` is not due yet, wait it out as :func:`plan_wait` says; True when it must not run now.

    Raises :class:`MalformedMessage` for an unreadable due time. Never raises for a queue
    error: a re-send that fails falls back to a hold; a hold that fails leaves the message
    to come back when its visibility expires, to be planned again then. ``clock`` gives Unix
    time (for the due time), ``monotonic`` the clock of the message's ``received_at``.
    """
    due = due_time(message)
    if due is None:
        return False
    remaining = due - clock()
    if remaining <= 0:
        return False
    received_at = getattr(message, "received_at", None)
    held = monotonic() - received_at if isinstance(received_at, (int, float)) else 0.0
    fifo = bool((getattr(message, "attributes", None) or {}).get("MessageGroupId"))
    wait = plan_wait(remaining, receive_count(message), held, fifo=fifo, max_receive_count=max_receive_count)
    message_id = getattr(message, "message_id", None)
    if wait.action == "resend" and _resend(message, wait.seconds):
        logger.info("message %s: due in %.0fs; re-sent to arrive in %ss (receive count starts again)",
                    message_id, remaining, wait.seconds)
        return True
    seconds = wait.seconds if wait.action == "hold" else max(1, min(wait.seconds, MAX_HOP - math.ceil(held) - 1))
    if Lease(message).release(seconds):
        logger.debug("message %s: due in %.0fs; hidden for %ss more", message_id, remaining, seconds)
    return True


def _resend(message: Any, delay: int) -> bool:
    """Send a copy of ``message`` delayed ``delay`` s (its due-time attribute copied with it), then delete the
    original."""
    queue = getattr(message, "queue", None)
    if queue is None or not hasattr(queue, "send"):
        return False
    entry = copy_entry(message, delay_seconds=delay)
    try:
        queue.send(entry)
    except Exception as exc:
        logger.warning("message %s: re-sending it to wait %ss failed (%s); holding it instead",
                       getattr(message, "message_id", None), delay, exc)
        return False
    try:
        message.delete()
    except Exception as exc:
        logger.error("message %s: re-sent (to wait until due), but the delete of the original failed (%s); "
                     "it may run twice", getattr(message, "message_id", None), exc)
    return True
