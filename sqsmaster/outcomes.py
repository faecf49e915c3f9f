"""The words for how an attempt ended (:class:`Outcome`) and what became of its message (:class:`Action`).

They are strings as well as enum members, so the job log's JSON, the log lines and
``AttemptRecord`` compare and print exactly as the bare strings did: ``Outcome.SUCCEEDED
== "succeeded"``, ``f"{Outcome.TIMED_OUT}" == "timed out"`` and ``json.dumps`` writes the
value. Records read back from a job log hold plain strings, which compare equal.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A string-valued member that prints as its value on every Python version
    (3.11 changed ``format()`` of mixed-in enums to the member's name)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return str(self.value).__format__(format_spec)


class Outcome(_Word):
    """How an attempt ended: the handler's word (``killed`` for an operator's kill), the worker's for what
    it did not run (``cancelled``: deleted unrun on an operator's order), and the job record's (``killed``,
    ``released``, ``dead-lettered``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    STUCK = "stuck"
    INTERRUPTED = "interrupted"
    LEASE_LOST = "lease lost"
    REJECTED = "rejected"
    NOT_RUN = "not run"
    KILLED = "killed"
    RELEASED = "released"
    DEAD_LETTERED = "dead-lettered"
    CANCELLED = "cancelled"


class Action(_Word):
    """What became of the message after an attempt."""

    DELETED = "deleted"
    RETRY = "retry"
    DEAD_LETTERED = "dead-lettered"
    HANDED_TO_REDRIVE = "handed to redrive"
    KEPT = "kept"
    RELEASED = "released"
    LEASE_LOST = "lease lost"


#: Job record outcomes, in the order reports list them.
JOB_OUTCOMES = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.KILLED, Outcome.RELEASED,
                Outcome.DEAD_LETTERED, Outcome.CANCELLED)
