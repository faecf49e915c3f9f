"""What the dashboard shows, computed from the job store and SQS: no web framework here, so it is testable alone.

Every function takes ``now`` (wall-clock seconds) from the caller. Views that summarise
many rows (overview, failures, dead letters) read at most :data:`SCAN_LIMIT` attempts,
newest first, through the store's cursor: a store of millions of rows costs them a bounded
read, and they say when they stopped early (``truncated``).
"""

from __future__ import annotations

import json
import math
import shlex
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, TypeVar

from ...store import AttemptRow, JobFilter, JobStore, WorkerRow
from ..admin import QueueStatus, queue_status

T = TypeVar("T")

#: The most attempts a summarising view reads (newest first).
SCAN_LIMIT = 20_000
#: Rows per store read while scanning.
SCAN_PAGE = 500
#: How long SQS queue depths are cached (s): every browser polls, SQS is asked at most this often per queue.
DEPTH_CACHE_SECONDS = 5.0
#: How long a page waits for SQS's answer before it shows the last depths known (s).
DEPTH_WAIT_SECONDS = 0.5
#: How long /api/jobs reuses a filter's total (s): on DynamoDB a count reads the whole matching index range
#: (every row's listed attributes: about 750 read units and several round trips per 20,000 rows), and every open
#: page refreshes every 3 s; paging and refreshing within this time count once.
COUNT_CACHE_SECONDS = 15.0
#: The most filters whose totals are kept (the oldest go first).
COUNT_CACHE_SIZE = 256
#: How long the summarising views (the overview's last hour, failures, dead letters) keep what they scanned (s):
#: each scan reads up to SCAN_LIMIT rows (on DynamoDB, read units for each), and every open page refreshes every
#: 3 s. An action of this dashboard drops them, so its effect shows at once.
SUMMARY_CACHE_SECONDS = 10.0
#: The window of the overview's rates and percentiles (s).
OVERVIEW_WINDOW = 3600.0
#: What a row's ``action`` says when its message went (or is about to go) to a dead-letter queue.
DEAD_ACTIONS = frozenset({"dead-lettered", "handed to redrive"})
#: A row's ``action`` once the dashboard moved its message out of the dead-letter queue.
REDRIVEN, DLQ_DELETED = "redriven", "deleted from the dead-letter queue"
#: Actions after which the message is still in its queue (a requeue would run it twice).
STILL_QUEUED = frozenset({"retry", "released", "kept", "lease lost"})
#: The marker :func:`sqsmaster.store.base.bounded_kwargs` ends cut kwargs with.
CUT_MARKER = " [... cut ...]"


def row_json(row: AttemptRow, now: float) -> dict[str, Any]:
    """An attempt as the API sends it: the stored fields plus ``worker``, ``stale``, ``elapsed``."""
    data = row.to_dict()
    data.update(worker=row.worker, stale=row.stale(now), running=row.running,
                elapsed=(row.ended if row.ended is not None else now) - row.started,
                heartbeat_age=now - row.last_seen if row.running else None,
                exception_type=exception_type(row.exception))
    return data


def worker_json(row: WorkerRow, now: float) -> dict[str, Any]:
    return {"worker": row.worker, "host": row.host, "pid": row.pid, "version": row.version, "queues": row.queues,
            "concurrency": row.concurrency, "busy": row.busy, "started": row.started, "last_seen": row.last_seen,
            "age": now - row.last_seen, "stopped": row.stopped, "stale": row.stale(now)}


def exception_type(exception: str | None) -> str:
    """``ValueError`` of ``"ValueError: bad input"`` (the part before the first colon); ``-`` for none."""
    if not exception:
        return "-"
    head = exception.split(":", 1)[0].strip()
    return head if head and " " not in head else exception.splitlines()[0][:80]


def scan(store: JobStore, where: JobFilter, now: float, limit: int = SCAN_LIMIT) -> Iterator[AttemptRow]:
    """Attempts matching ``where``, newest first, at most ``limit``."""
    cursor: str | None = None
    seen = 0
    while seen < limit:
        page = store.attempts(where, now, limit=min(SCAN_PAGE, limit - seen), cursor=cursor)
        yield from page.rows
        seen += len(page.rows)
        if page.cursor is None:
            return
        cursor = page.cursor


def kwargs_of(row: AttemptRow) -> dict[str, Any] | None:
    """The task's kwargs as stored, or None when they were cut to the store's bound (or are not a JSON object)."""
    if row.kwargs is None:
        return {}
    if row.kwargs.endswith(CUT_MARKER):
        return None
    try:
        kwargs = json.loads(row.kwargs)
    except ValueError:
        return None
    return kwargs if isinstance(kwargs, dict) else None


def submit_command(row: AttemptRow) -> str | None:
    """The ``sqsmaster submit`` command line that sends this attempt's task again (None if its kwargs were cut)."""
    kwargs = kwargs_of(row)
    if kwargs is None or row.task is None:
        return None
    words = ["sqsmaster", "submit", row.queue, row.task]
    if kwargs:
        words += ["--json", json.dumps(kwargs, sort_keys=True)]
    return " ".join(shlex.quote(word) for word in words)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class DepthCache:
    """SQS depths per queue URL, asked at most once per :data:`DEPTH_CACHE_SECONDS` (thread-safe).

    The question runs on a thread of its own and a page waits for it at most ``wait`` seconds: a slow
    or unreachable SQS endpoint (retries, connect timeouts) shows as the last depths known, or as
    "no answer yet", and never holds a page past its bound."""

    def __init__(self, status: Callable[[str], QueueStatus] = queue_status,
                 clock: Callable[[], float] = time.monotonic, ttl: float = DEPTH_CACHE_SECONDS,
                 wait: float = DEPTH_WAIT_SECONDS) -> None:
        self._status, self._clock, self._ttl, self._wait = status, clock, ttl, wait
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._asking: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> dict[str, Any]:
        """``visible``, ``in_flight``, ``delayed``, ``dead_letter_url``, ``dead_letter_visible``; or ``error``."""
        return self.get_many([url])[url]

    def get_many(self, urls: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`get` of each URL, asked at once: a page waits ``wait`` seconds at most, however many."""
        asking = []
        with self._lock:
            for url in urls:
                cached = self._cache.get(url)
                if cached is not None and self._clock() - cached[0] < self._ttl:
                    continue
                if url not in self._asking:
                    self._asking[url] = threading.Thread(target=self._ask, args=(url,), daemon=True,
                                                         name=f"depth {url}")
                    self._asking[url].start()
                asking.append(self._asking[url])
        deadline = time.monotonic() + self._wait
        for thread in asking:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:
            found = {url: self._cache.get(url) for url in urls}
        unanswered = {"error": f"SQS has not answered within {self._wait:g} s"}
        return {url: cached[1] if cached is not None else unanswered for url, cached in found.items()}

    def _ask(self, url: str) -> None:
        try:
            status = self._status(url)
            depth: dict[str, Any] = {"visible": status.visible, "in_flight": status.in_flight,
                                     "delayed": status.delayed, "dead_letter_url": status.dead_letter_url,
                                     "dead_letter_visible": status.dead_letter_visible}
        except Exception as exc:  # an unreachable queue is shown as such, the rest of the page still works
            depth = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        with self._lock:
            self._cache[url] = (self._clock(), depth)
            self._asking.pop(url, None)


class TtlCache:
    """Values per key, each computed at most once per ``ttl`` seconds (thread-safe). :meth:`clear` drops them
    all, and a value being computed while it runs is not kept (it may predate what the clear is for)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = COUNT_CACHE_SECONDS) -> None:
        self._clock, self._ttl = clock, ttl
        self._cache: dict[Any, tuple[float, Any]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        """The value of ``key``, ``compute()`` when none is fresh."""
        with self._lock:
            cached, generation = self._cache.get(key), self._generation
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]  # type: ignore[no-any-return]
        value = compute()  # outside the lock: a slow store read does not hold other keys
        with self._lock:
            if generation == self._generation:
                self._cache.pop(key, None)
                self._cache[key] = (self._clock(), value)
                while len(self._cache) > COUNT_CACHE_SIZE:
                    del self._cache[next(iter(self._cache))]
        return value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._generation += 1


def summaries() -> TtlCache:
    """The cache of the summarising views' scans (:data:`SUMMARY_CACHE_SECONDS`)."""
    return TtlCache(ttl=SUMMARY_CACHE_SECONDS)


def overview(store: JobStore, queues: list[str], depths: DepthCache, now: float,
             cache: TtlCache | None = None) -> dict[str, Any]:
    """Per queue: SQS depths, and over the last hour: attempts ended, failure rate, runtime p50/p95;
    worker slots busy and idle (live workers only). The hour's scan comes from ``cache`` when given."""
    per_queue, truncated, as_of = (cache.get(("overview", tuple(queues)), lambda: last_hour(store, queues, now))
                                   if cache is not None else last_hour(store, queues, now))
    rows = []
    depth = depths.get_many(queues)
    for url, stats in per_queue.items():
        runtimes = stats["runtimes"]
        rows.append({"queue": url, "configured": url in queues, **depth.get(url, {}),
                     "ended_last_hour": stats["ended"], "throughput_per_minute": stats["ended"] / 60.0,
                     "failure_rate": stats["failed"] / stats["ended"] if stats["ended"] else None,
                     "runtime_p50": percentile(runtimes, 0.5), "runtime_p95": percentile(runtimes, 0.95)})
    live = [w for w in store.workers() if w.stopped is None and not w.stale(now)]
    slots = sum(w.concurrency for w in live)
    busy = sum(w.busy for w in live)
    return {"now": now, "as_of": as_of, "queues": rows, "workers": len(live), "slots": slots, "busy": busy,
            "idle": max(slots - busy, 0), "truncated": truncated}


def last_hour(store: JobStore, queues: list[str], now: float) -> tuple[dict[str, dict[str, Any]], bool, float]:
    """Per queue, the attempts of the last hour: ended, failed, runtimes; whether the scan was cut; ``now``."""
    per_queue: dict[str, dict[str, Any]] = {q: {"ended": 0, "failed": 0, "runtimes": []} for q in queues}
    scanned = 0
    for row in scan(store, JobFilter(since=now - OVERVIEW_WINDOW), now):
        scanned += 1
        stats = per_queue.setdefault(row.queue, {"ended": 0, "failed": 0, "runtimes": []})
        if row.outcome is None:
            continue
        stats["ended"] += 1
        stats["failed"] += row.outcome not in ("succeeded", "cancelled", "not run")
        if row.runtime is not None:
            stats["runtimes"].append(row.runtime)
    return per_queue, scanned >= SCAN_LIMIT, now


def running(store: JobStore, now: float) -> list[dict[str, Any]]:
    """Running attempts and stale ones (no sign of life within their lease: flagged), newest first."""
    rows = list(scan(store, JobFilter(status="running"), now, 2000))
    rows += list(scan(store, JobFilter(status="stale"), now, 2000))
    flags = store.flags([row.message_id for row in rows])
    found = []
    for row in sorted(rows, key=lambda r: r.started, reverse=True):
        data = row_json(row, now)
        data["hard_timeout"] = row.deadline - row.started if row.deadline is not None else None
        flag = flags.get(row.message_id)
        data["kill_requested"] = flag is not None and flag.kind == "kill"
        found.append(data)
    return found


@dataclass
class FailureGroup:
    """Failed attempts of one task with one exception type; ``requeueable``: the newest failed attempt of
    each message that left its queue (dead-lettered or dropped), with intact kwargs; ``cut``: the same
    whose kwargs were cut to the store's bound (they cannot be sent again from the store)."""

    task: str
    exception_type: str
    count: int
    latest: AttemptRow
    requeueable: list[AttemptRow]
    cut: list[AttemptRow]
    messages: int


def failure_groups(store: JobStore, now: float, since: float | None = None) -> tuple[list[FailureGroup], bool]:
    """Failed attempts grouped by task x exception type, largest group first; and whether the scan was cut."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    scanned = 0
    for row in scan(store, JobFilter(status="failed", since=since), now):
        scanned += 1
        key = (row.task or "(unknown)", exception_type(row.exception))
        group = groups.setdefault(key, {"count": 0, "latest": row, "newest": {}})
        group["count"] += 1
        group["newest"].setdefault(row.message_id, row)  # rows come newest first
    found = []
    for (task, kind), group in groups.items():
        # A row with no task name (a message that did not decode) cannot be sent again: neither list has it.
        gone = [row for row in group["newest"].values() if row.action not in STILL_QUEUED and row.task]
        found.append(FailureGroup(task, kind, group["count"], group["latest"],
                                  [row for row in gone if kwargs_of(row) is not None],
                                  [row for row in gone if kwargs_of(row) is None], len(group["newest"])))
    found.sort(key=lambda g: (-g.count, g.task, g.exception_type))
    return found, scanned >= SCAN_LIMIT


def failure_json(group: FailureGroup, now: float) -> dict[str, Any]:
    return {"task": group.task, "exception_type": group.exception_type, "count": group.count,
            "messages": group.messages, "requeueable": len(group.requeueable), "cut": len(group.cut),
            "latest": row_json(group.latest, now)}


def dead_letters(store: JobStore, now: float) -> tuple[list[AttemptRow], bool]:
    """The newest attempt of each message whose action sent it to a dead-letter queue (and that the
    dashboard has not redriven or deleted since), newest first; and whether the scan was cut. Read
    from the store: looking into a DLQ would raise its messages' receive counts."""
    newest: dict[str, AttemptRow] = {}
    scanned = 0
    for row in scan(store, JobFilter(status="failed"), now):  # a dead-lettered attempt never succeeded
        scanned += 1
        newest.setdefault(row.message_id, row)
    dead = [row for row in newest.values() if row.action in DEAD_ACTIONS]
    return dead, scanned >= SCAN_LIMIT


def mark(store: JobStore, row: AttemptRow, action: str) -> None:
    """Record on a message's newest row what the dashboard did with it (its ``action``)."""
    store.put_attempt(replace(row, action=action))
