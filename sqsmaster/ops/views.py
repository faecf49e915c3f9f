"""What ``sqsmaster jobs``, ``job`` and ``workers`` show: job store rows as aligned tables or as JSON.

Every function takes ``now`` (wall-clock seconds) so what it shows is a function of the rows
and the clock alone. A running attempt whose worker has not vouched for it within its lease
is shown as ``stale``, never as running; a worker not seen for :data:`WORKER_STALE_AFTER`
seconds is shown as ``stale`` too.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Sequence

from ..errors import ConfigurationError
from ..store import AttemptRow, JobStore, WorkerRow, open_store, store_url_from_env

#: A worker row older than this (seconds) is flagged stale: several of the recorder's worker heartbeats missed.
WORKER_STALE_AFTER = 120.0

STORE_HELP = "the job store (sqlite:///PATH or dynamodb://TABLE?region=...); default $SQSMASTER_STORE"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def open_for_reading(url: str | None) -> JobStore:
    """The store at ``url`` or ``$SQSMASTER_STORE``, never created by looking at it. ConfigurationError when
    neither is given; StoreError when it does not exist or cannot be reached."""
    resolved = store_url_from_env(url)
    if not resolved:
        raise ConfigurationError("no job store given: use --store URL or set SQSMASTER_STORE")
    return open_store(resolved, create=False)


def parse_since(text: str, now: float) -> float:
    """A point in time from ``1h``, ``90m``, ``2d``, ``1h30m`` (that long before ``now``) or an ISO 8601 time
    (``2026-12-02T10:00``; without a zone it is UTC). ConfigurationError naming the value otherwise."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        return now - sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--since {text!r}: not a duration (30m, 1h, 2d) nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def span(seconds: float) -> str:
    """A duration the way an operator reads it: ``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    whole = int(max(seconds, 0))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def ago(seconds: float) -> str:
    """``3m12s ago`` (``in 3m12s`` for a time still to come)."""
    return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(-seconds)}"


def status_of(row: AttemptRow, now: float) -> str:
    """``stale`` (running, but nobody vouched for it within its lease), ``running``, or the outcome."""
    if row.stale(now):
        return "stale"
    return "running" if row.running else str(row.outcome)


def job_view(row: AttemptRow, now: float) -> dict[str, Any]:
    """A row with what an operator asks about it: status, worker, elapsed (or runtime), time left to the
    hard timeout (running rows only, not stale ones) and heartbeat age (running and stale rows), in seconds."""
    running, status = row.running, status_of(row, now)
    elapsed = now - row.started if running else row.runtime if row.runtime is not None else \
        (row.ended - row.started if row.ended is not None else None)
    # a stale row's deadline was its dead worker's: no time is left to anything
    left = row.deadline - now if status == "running" and row.deadline is not None else None
    return {**row.to_dict(), "status": status, "worker": row.worker, "elapsed": elapsed, "time_left": left,
            "heartbeat_age": now - row.last_seen if running else None}


def worker_view(row: WorkerRow, now: float, stale_after: float = WORKER_STALE_AFTER) -> dict[str, Any]:
    """A worker row with its state (``stopped``, ``stale`` or ``alive``) and how long since it was seen."""
    state = "stopped" if row.stopped is not None else "stale" if row.stale(now, stale_after) else "alive"
    return {"worker": row.worker, "state": state, "seen_age": now - row.last_seen, "host": row.host, "pid": row.pid,
            "version": row.version, "queues": list(row.queues), "concurrency": row.concurrency, "busy": row.busy,
            "started": row.started, "last_seen": row.last_seen, "stopped": row.stopped}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [headers, *rows]]
    return "\n".join(lines)


def queue_name(url: str) -> str:
    """The last part of a queue URL (``https://sqs.../123/jobs`` -> ``jobs``)."""
    return url.rstrip("/").rsplit("/", 1)[-1] or url


def jobs_table(rows: Sequence[AttemptRow], now: float) -> str:
    """``sqsmaster jobs``'s table: one line per attempt, newest first."""
    lines = []
    for row in rows:
        view = job_view(row, now)
        left = view["time_left"]
        lines.append([row.message_id, str(row.attempt), row.task or "-", view["status"], ago(now - row.started),
                      span(view["elapsed"]) if view["elapsed"] is not None else "-",
                      "-" if left is None else span(left) if left >= 0 else f"over {span(-left)}",
                      ago(view["heartbeat_age"]) if view["heartbeat_age"] is not None else "-",
                      row.worker, queue_name(row.queue)])
    return table(["MESSAGE ID", "TRY", "TASK", "STATUS", "STARTED", "TIME", "LEFT", "HEARTBEAT", "WORKER", "QUEUE"],
                 lines)


def job_text(rows: Sequence[AttemptRow], now: float) -> str:
    """``sqsmaster job``'s page: every attempt at one message, oldest first, each with its traceback."""
    blocks = []
    for row in rows:
        view = job_view(row, now)
        fields = [("status", view["status"]), ("task", row.task), ("queue", row.queue), ("worker", row.worker),
                  ("started", f"{_iso(row.started)} ({ago(now - row.started)})"),
                  ("ended", f"{_iso(row.ended)} ({ago(now - row.ended)})" if row.ended is not None else None),
                  ("time", span(view["elapsed"]) if view["elapsed"] is not None else None),
                  ("hard timeout", _iso(row.deadline) if row.deadline is not None else None),
                  ("time left", span(view["time_left"]) if view["time_left"] is not None else None),
                  ("heartbeats", f"{row.heartbeats}, last {ago(now - row.last_seen)}" if row.running else
                   str(row.heartbeats)),
                  ("action", row.action), ("peak memory", f"{row.peak_memory} bytes" if row.peak_memory else None),
                  ("kwargs", row.kwargs), ("exception", row.exception)]
        lines = [f"attempt {row.attempt} of {row.message_id}"]
        lines += [f"  {name + ':':<14}{value}" for name, value in fields if value is not None]
        if row.traceback:
            lines += ["  traceback:"] + [f"    {line}" for line in row.traceback.rstrip().splitlines()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def workers_table(rows: Sequence[WorkerRow], now: float, stale_after: float = WORKER_STALE_AFTER) -> str:
    """``sqsmaster workers``'s table: one line per worker process, most recently seen first."""
    lines = []
    for row in rows:
        view = worker_view(row, now, stale_after)
        lines.append([row.worker, view["state"], f"{row.busy}/{row.concurrency}", ago(view["seen_age"]),
                      ago(now - row.started), row.version or "-",
                      ", ".join(queue_name(q) for q in row.queues) or "-"])
    return table(["WORKER", "STATE", "BUSY", "LAST SEEN", "STARTED", "VERSION", "QUEUES"], lines)


def _iso(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
