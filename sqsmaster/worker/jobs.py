"""Job records: one line per attempt at a task, in a JSON-lines job log.

``record_from_handler(handler)`` turns a finished :class:`~sqsmaster.MessageHandler`
into a :class:`JobRecord`; :class:`JobLog` appends records to a file that many worker
processes can share (each record is one ``write()`` of one line in append mode) and
reads them back. ``sqsmaster report`` summarises a job log and draws its timeline.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from ..encoding import decode_task
from ..errors import MalformedMessage, TaskCrashed
from ..lease import receive_count
from ..outcomes import JOB_OUTCOMES, Outcome

logger = logging.getLogger(__name__)

#: How an attempt ended, in the order reports list them.
OUTCOMES = JOB_OUTCOMES

#: MessageHandler's outcomes as job outcomes: a stuck task is killed; an interrupted one is released.
_HANDLER_OUTCOMES: dict[str, str] = {Outcome.SUCCEEDED: Outcome.SUCCEEDED, Outcome.FAILED: Outcome.FAILED,
                                     Outcome.TIMED_OUT: Outcome.TIMED_OUT, Outcome.STUCK: Outcome.KILLED,
                                     Outcome.INTERRUPTED: Outcome.RELEASED}


@dataclass
class JobRecord:
    """One attempt at one message's task. Times are wall-clock seconds since the epoch.

    ``attempt`` is the message's receive count; ``submitted`` is when the message was
    sent (SQS's ``SentTimestamp``); ``peak_memory`` is in bytes (None when unknown): the
    ``ru_maxrss`` of the process that ran the task (see :func:`record_from_handler`);
    ``heartbeats`` is how many times the lease was extended while the task ran.
    """

    message_id: str | None
    task: str | None
    attempt: int
    host: str
    pid: int
    submitted: float | None
    started: float
    ended: float
    runtime: float
    outcome: str
    exception: str | None = None
    traceback: str | None = None
    peak_memory: int | None = None
    heartbeats: int | None = None

    @property
    def worker(self) -> str:
        """``host:pid``, the row group a timeline draws the attempt in."""
        return f"{self.host}:{self.pid}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobRecord":
        """Build a record from a decoded JSON line; unknown keys are ignored (newer writers may add some)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def peak_memory(children: bool = False) -> int:
    """Peak resident memory in bytes of this process (or of its waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return int(usage.ru_maxrss) * 1024  # Linux reports kilobytes


def record_from_handler(handler: Any, *, task: str | None = None, ended: float | None = None,
                        max_receive_count: int | None = None, peak_memory_bytes: int | None = None,
                        dead_lettered: bool = False) -> JobRecord:
    """The record of a MessageHandler whose ``with`` block has ended.

    Call it right after the block (``ended`` defaults to now; ``started`` is ``ended - runtime``).
    ``task`` defaults to the name in the message body. A failed attempt is recorded as
    ``dead-lettered`` when ``dead_lettered`` says it went down the dead-letter path, or when it
    is numbered ``max_receive_count`` or more: the queue's redrive policy moves the message on
    its next receive. A task that crashed by a signal (``TaskCrashed``) is ``killed``.

    ``peak_memory_bytes`` defaults to the ``ru_maxrss`` of the process that ran the task: in
    process isolation the task's own child (from ``wait4``, so per attempt), in signal
    isolation this process's high-water mark since it started (it never goes down, so a small
    task after a big one shows the big one's peak).
    """
    message = handler.message
    ended = time.time() if ended is None else ended
    runtime = float(handler.runtime or 0.0)
    attempt = receive_count(message)
    error = handler.exception
    outcome = _HANDLER_OUTCOMES.get(str(handler.outcome), str(handler.outcome))
    if outcome == Outcome.FAILED and isinstance(error, TaskCrashed) and error.signal:
        outcome = Outcome.KILLED
    if outcome not in (Outcome.SUCCEEDED, Outcome.RELEASED) and (
            dead_lettered or (max_receive_count and attempt >= max_receive_count)):
        outcome = Outcome.DEAD_LETTERED
    if peak_memory_bytes is None:
        peak_memory_bytes = getattr(handler, "peak_memory", None)
    if peak_memory_bytes is None:
        peak_memory_bytes = peak_memory(children=getattr(handler, "isolation", "signal") == "process")
    lease = getattr(handler, "lease", None)
    record = record_from_message(message, task=task, outcome=outcome, started=ended - runtime, ended=ended,
                                 error=error, peak_memory_bytes=peak_memory_bytes)
    record.heartbeats = lease.extensions if lease is not None else None
    return record


def record_from_message(message: Any, *, task: str | None, outcome: str, started: float,
                        ended: float | None = None, error: BaseException | None = None,
                        peak_memory_bytes: int | None = None) -> JobRecord:
    """A record for a message, with the outcome given: for what no handler ran (a rejected message)."""
    ended = time.time() if ended is None else ended
    return JobRecord(
        message_id=getattr(message, "message_id", None),
        task=task if task is not None else _task_name(message),
        attempt=receive_count(message), host=socket.gethostname(), pid=os.getpid(),
        submitted=submitted_at(message), started=started, ended=ended, runtime=max(ended - started, 0.0),
        outcome=outcome,
        exception=None if error is None else f"{type(error).__name__}: {error}",
        traceback=None if error is None else "".join(traceback.format_exception(type(error), error,
                                                                                 error.__traceback__)),
        peak_memory=peak_memory_bytes,
    )


def _task_name(message: Any) -> str | None:
    try:
        return decode_task(getattr(message, "body", ""), getattr(message, "message_id", None))[0]
    except MalformedMessage:
        return None


def submitted_at(message: Any) -> float | None:
    """When the message was sent (SQS's ``SentTimestamp``, in seconds), None when unknown."""
    sent = (getattr(message, "attributes", None) or {}).get("SentTimestamp")
    try:
        return int(sent) / 1000 if sent is not None else None
    except ValueError:
        return None


class JobLog:
    """A JSON-lines file of job records, shared safely by the processes of one host.

    ``append`` opens the file with ``O_APPEND`` and writes each line with one
    ``os.write``, so lines from different processes never interleave, however long a
    traceback makes them (on a local filesystem; NFS does not honour ``O_APPEND``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, record: JobRecord) -> None:
        """Add one record; creates the file (and its directory) if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (record.to_json() + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            while written < len(data):  # only on a full disk or a signal: finish the line at least
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)

    def __iter__(self) -> Iterator[JobRecord]:
        return self.read()

    def read(self, skipped: list[tuple[int, str]] | None = None) -> Iterator[JobRecord]:
        """The records in file order. A line that is not a record (a writer killed mid-line) is skipped
        with a warning, or, given a ``skipped`` list, appended to it as ``(line number, reason)``.
        Raises FileNotFoundError when there is no log."""
        with open(self.path, encoding="utf-8", errors="replace") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    yield JobRecord.from_dict(json.loads(line))
                except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, wrong fields
                    if skipped is None:
                        logger.warning("%s:%d: skipped a line that is not a job record (%s)", self.path, number,
                                       exc)
                    else:
                        skipped.append((number, f"{type(exc).__name__}: {exc}"))

    def records(self) -> list[JobRecord]:
        return list(self.read())
