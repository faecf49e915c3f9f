"""Operator orders to a running fleet, through the job store: kill a running task, cancel a queued message.

Both set a :class:`~sqsmaster.store.Flag` on the message and record who gave the order in
the store's audit trail; workers read the flags (a kill at the task's next heartbeat tick,
a cancel when the message is received). The CLI (``sqsmaster kill`` / ``cancel``) and the
dashboard both go through here.
"""

from __future__ import annotations

import getpass
import socket
import time

from ..errors import ConfigurationError
from ..store import CANCEL, KILL, THEN_CHOICES, ActionRow, AttemptRow, Flag, JobFilter, JobStore


def operator() -> str:
    """Who is giving an order: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def kill(store: JobStore, message_id: str, then: str = "dead-letter", who: str | None = None,
         now: float | None = None) -> Flag:
    """Order the task running ``message_id`` stopped at its next heartbeat tick, then its message
    released, dead-lettered or deleted (``then``). Returns the flag set."""
    if then not in THEN_CHOICES:
        raise ConfigurationError(f"--then must be one of {', '.join(THEN_CHOICES)}, not {then!r}")
    return _order(store, Flag(message_id, KILL, who or operator(), time.time() if now is None else now, then))


def cancel(store: JobStore, message_id: str, who: str | None = None, now: float | None = None) -> Flag:
    """Order the queued message ``message_id`` deleted unrun by the worker that receives it."""
    return _order(store, Flag(message_id, CANCEL, who or operator(), time.time() if now is None else now, "delete"))


def _order(store: JobStore, flag: Flag) -> Flag:
    if not flag.message_id or not flag.message_id.strip():
        raise ConfigurationError("a message id is needed")
    # The audit row first: a store that fails between the two writes leaves an order recorded and not
    # set (the operator sees the error and may give it again), never an order set that no one recorded.
    store.record_action(ActionRow(flag.at, flag.who, flag.kind, flag.message_id,
                                  detail=None if flag.kind == CANCEL else f"then {flag.then}"))
    store.set_flag(flag)
    return flag


def running_attempt(store: JobStore, message_id: str, now: float | None = None) -> AttemptRow | None:
    """The attempt at ``message_id`` the store shows running (a live heartbeat), or None: a kill of a
    message that is not running waits for its next attempt."""
    rows = store.attempts(JobFilter(status="running", message_id=message_id), time.time() if now is None else now,
                          limit=1).rows
    return rows[0] if rows else None
