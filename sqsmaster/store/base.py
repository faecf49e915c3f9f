"""The job store's protocol and its rows: what workers report and operators read and steer.

A job store keeps, per attempt at a message, what ran where and how it ended
(:class:`AttemptRow`); per worker process, that it is alive (:class:`WorkerRow`);
operator flags on messages (:class:`Flag`: kill a running task, cancel a queued one);
claims with an owner and an expiry (:meth:`JobStore.claim`: periodic slots and task
locks); and an audit trail of operator actions (:class:`ActionRow`). SQS stays the
source of truth for what is queued: the store is for seeing and steering.

Every time is wall-clock seconds since the epoch and is passed in by the caller (rows
carry their times; ``expire``, ``claim`` and ``renew`` take ``now``), so tests drive
the store with any clock. Every implementation passes ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Protocol, runtime_checkable

from ..errors import SqsMasterError

#: Bounds on what one attempt row carries (a DynamoDB item is at most 400 KB; a page of rows must stay small).
KWARGS_LIMIT = 4096
TRACEBACK_LIMIT = 16384
EXCEPTION_LIMIT = 1024

#: How long finished attempts are kept by default, by how they ended (seconds).
SUCCESS_TTL = 24 * 3600.0
FAILURE_TTL = 7 * 24 * 3600.0

#: Flag kinds, and what a kill does with the message afterwards.
KILL, CANCEL = "kill", "cancel"
THEN_CHOICES = ("release", "dead-letter", "delete")


class StoreError(SqsMasterError):
    """The job store could not be reached or answered with an error (the message names the store)."""


def bounded(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, keeping its end (a traceback's last lines matter most)."""
    if text is None or len(text) <= limit:
        return text
    marker = f"[... {len(text) - limit} characters cut ...]\n"
    return marker + text[len(text) - limit + len(marker):]


def bounded_kwargs(kwargs: Any) -> str | None:
    """A task's kwargs as JSON for a row, at most :data:`KWARGS_LIMIT` characters (cut, with a marker)."""
    if kwargs is None:
        return None
    try:
        text = json.dumps(kwargs, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(kwargs)
    if len(text) <= KWARGS_LIMIT:
        return text
    return text[: KWARGS_LIMIT - 20] + " [... cut ...]"


@dataclass
class AttemptRow:
    """One attempt at one message. ``attempt`` is the message's receive count at that attempt, so
    ``(message_id, attempt)`` identifies the row. ``outcome`` is None while the attempt runs (see
    :func:`sqsmaster.outcomes.Outcome`: succeeded, failed, timed out, killed, cancelled...), ``action``
    what became of the message (deleted, retry, dead-lettered, released...). ``deadline`` is when the
    hard timeout fires; ``lease`` the visibility timeout the worker keeps extending: a running row whose
    last sign of life is older than that is *stale* (its worker died)."""

    message_id: str
    attempt: int
    task: str | None
    queue: str
    host: str
    pid: int
    started: float
    kwargs: str | None = None
    submitted: float | None = None
    deadline: float | None = None
    lease: float | None = None
    heartbeats: int = 0
    last_heartbeat: float | None = None
    ended: float | None = None
    outcome: str | None = None
    action: str | None = None
    runtime: float | None = None
    peak_memory: int | None = None
    exception: str | None = None
    traceback: str | None = None

    @property
    def worker(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def running(self) -> bool:
        return self.outcome is None

    @property
    def last_seen(self) -> float:
        return self.last_heartbeat if self.last_heartbeat is not None else self.started

    def stale(self, now: float) -> bool:
        """True for a running row nobody has vouched for within its lease (or 5 minutes if unknown)."""
        return self.running and now - self.last_seen > (self.lease or 300.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttemptRow":
        """Build a row from stored fields; unknown keys are ignored (newer writers may add some)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class WorkerRow:
    """One worker process (a pool child counts as one): who it is and when it last said so."""

    host: str
    pid: int
    started: float
    last_seen: float
    version: str = ""
    queues: list[str] = field(default_factory=list)
    concurrency: int = 1
    busy: int = 0
    stopped: float | None = None

    @property
    def worker(self) -> str:
        return f"{self.host}:{self.pid}"

    def stale(self, now: float, after: float = 120.0) -> bool:
        return self.stopped is None and now - self.last_seen > after

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkerRow":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Flag:
    """An operator's order about one message: ``kill`` (a running task: stop it at the next heartbeat
    tick, then ``then``) or ``cancel`` (a queued message: delete it unrun when received)."""

    message_id: str
    kind: str
    who: str
    at: float
    then: str = "dead-letter"
    done: float | None = None


@dataclass
class ActionRow:
    """An operator action, for the audit trail: who did what to which target, touching how many."""

    at: float
    who: str
    what: str
    target: str
    count: int = 1
    detail: str | None = None


@dataclass
class FiredRow:
    """The latest slot a periodic task's schedule was sent for (slot and ``at``: seconds since the epoch),
    and by whom (the scheduler's owner id)."""

    schedule: str
    slot: float
    at: float
    owner: str


@dataclass
class JobFilter:
    """Which attempts to list. Every field narrows; None means any. ``status``: ``running``,
    ``failed`` (anything that ended other than succeeded/cancelled), ``stale``, or an outcome word.
    ``text`` is a substring of the kwargs; ``exception`` a substring of the exception line."""

    status: str | None = None
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None
    exception: str | None = None
    text: str | None = None
    message_id: str | None = None


@dataclass
class Page:
    """One page of attempts, newest first; ``cursor`` fetches the next page (None: this was the last)."""

    rows: list[AttemptRow]
    cursor: str | None = None


#: Outcomes that are not failures when listing ``--failed``.
NOT_FAILED = frozenset({"succeeded", "cancelled", "not run"})


def matches(row: AttemptRow, where: JobFilter, now: float) -> bool:
    """The filter's meaning in Python, for stores that filter rows after reading them."""
    status = where.status
    if status == "running" and (not row.running or row.stale(now)):
        return False
    if status == "stale" and not row.stale(now):
        return False
    if status == "failed" and (row.running or row.outcome in NOT_FAILED):
        return False
    if status not in (None, "running", "stale", "failed") and row.outcome != status:
        return False
    checks = ((where.task, row.task), (where.queue, row.queue), (where.worker, row.worker),
              (where.message_id, row.message_id))
    if any(wanted is not None and wanted != value for wanted, value in checks):
        return False
    if where.since is not None and row.started < where.since:
        return False
    if where.until is not None and row.started > where.until:
        return False
    if where.exception is not None and where.exception not in (row.exception or ""):
        return False
    return where.text is None or where.text in (row.kwargs or "")


@runtime_checkable
class JobStore(Protocol):
    """What a job store does. Writes are idempotent (a retried write leaves the same row); reads of
    nothing return empty lists / None. Any failure to reach the store raises :class:`StoreError`."""

    url: str

    # -- what workers write (through the background writer, never on a task's clock) --
    def put_attempt(self, row: AttemptRow) -> None:
        """Insert or replace the row of ``(row.message_id, row.attempt)``; a running row (no outcome) never
        replaces a finished one: an attempt ends once, and a start write may land after the end."""

    def heartbeat(self, message_id: str, attempt: int, at: float, heartbeats: int) -> None:
        """Record a heartbeat of a running attempt (no-op for an unknown or finished row)."""

    def put_worker(self, row: WorkerRow) -> None:
        """Insert or replace the row of worker ``row.host:row.pid``."""

    # -- what operators read --
    def attempts(self, where: JobFilter, now: float, limit: int = 50, cursor: str | None = None) -> Page:
        """Attempts matching ``where``, newest ``started`` first, ``limit`` per page."""

    def count(self, where: JobFilter, now: float) -> int:
        """How many attempts match ``where``."""

    def attempts_of(self, message_id: str) -> list[AttemptRow]:
        """Every attempt at one message, oldest first."""

    def workers(self) -> list[WorkerRow]:
        """Every known worker, most recently seen first."""

    # -- operator flags --
    def set_flag(self, flag: Flag) -> None:
        """Set (replace) the flag of ``flag.message_id``."""

    def flags(self, message_ids: Iterable[str]) -> dict[str, Flag]:
        """The pending (not done) flags among ``message_ids``."""

    def flag_done(self, message_id: str, at: float, ordered: float | None = None) -> None:
        """Mark a message's flag as carried out; with ``ordered``, only if it is still the order given then
        (its ``at``): a newer order (a cancel after a kill) set meanwhile stays pending."""

    # -- claims: periodic slots and task locks --
    def claim(self, key: str, owner: str, now: float, ttl: float) -> bool:
        """Take ``key`` for ``owner`` until ``now + ttl`` if nobody holds it (or the holder's claim
        expired, or ``owner`` already holds it). Atomic across processes and hosts."""

    def renew(self, key: str, owner: str, now: float, ttl: float) -> bool:
        """Extend ``owner``'s claim on ``key``; False if ``owner`` no longer holds it."""

    def release(self, key: str, owner: str) -> bool:
        """Give ``key`` up if ``owner`` holds it; False otherwise."""

    def holder(self, key: str, now: float) -> str | None:
        """Who holds ``key`` now (None if nobody, or the claim expired)."""

    # -- periodic tasks: the latest slot each schedule fired --
    def mark_fired(self, row: FiredRow) -> bool:
        """Record that schedule ``row.schedule`` sent its slot ``row.slot``, unless that slot or a later one
        is already recorded: the recorded slot never moves back (a conditional write). True if ``row``
        is now the record. Idempotent."""

    def fired(self, schedule: str) -> FiredRow | None:
        """The latest slot recorded for ``schedule`` (None: it never fired). A strongly consistent read:
        a scheduler reads it after taking a slot's claim to learn whether another one sent the slot."""

    # -- audit and housekeeping --
    def record_action(self, action: ActionRow) -> None:
        """Append an operator action to the audit trail."""

    def actions(self, limit: int = 100) -> list[ActionRow]:
        """The latest operator actions, newest first."""

    def expire(self, now: float, success_ttl: float = SUCCESS_TTL, failure_ttl: float = FAILURE_TTL) -> int:
        """Drop finished attempts older than their time to live; returns how many went. Orders (flags) given and
        worker rows last seen more than ``failure_ttl`` ago go too, here or by the store's own expiry (DynamoDB's
        TTL attribute); the actions (the audit trail) stay."""

    def close(self) -> None:
        """Let go of connections; the store is not used afterwards."""
