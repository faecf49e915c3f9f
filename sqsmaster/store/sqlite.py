"""``sqlite:///PATH``: the job store of one host, in one SQLite file (WAL) that every worker shares.

Writes are single statements (an upsert, a conditional update), so a process killed at
any moment leaves either the old row or the new one. Claims are one ``INSERT ... ON
CONFLICT DO UPDATE ... WHERE`` statement: two processes racing for a key cannot both win.
Stdlib ``sqlite3`` only; SQLite over NFS is unsafe (use DynamoDB for a fleet).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from .base import (
    FAILURE_TTL,
    SUCCESS_TTL,
    ActionRow,
    AttemptRow,
    FiredRow,
    Flag,
    JobFilter,
    Page,
    StoreError,
    WorkerRow,
    matches,
)

#: Rows read per statement while paging (the filter's non-indexed parts are applied in Python).
_SCAN = 200

#: How long a write waits for another process's transaction before giving up (ms): well under any lease.
BUSY_TIMEOUT_MS = 5_000

_ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRow)]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS attempts ({", ".join(_ATTEMPT_COLUMNS)}, PRIMARY KEY (message_id, attempt));
CREATE INDEX IF NOT EXISTS attempts_by_start ON attempts (started DESC, message_id DESC, attempt DESC);
CREATE INDEX IF NOT EXISTS attempts_running ON attempts (outcome, started DESC);
CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, data TEXT NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS flags (message_id TEXT PRIMARY KEY, kind TEXT NOT NULL, who TEXT NOT NULL,
    at REAL NOT NULL, then_ TEXT NOT NULL, done REAL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fired (schedule TEXT PRIMARY KEY, slot REAL NOT NULL, at REAL NOT NULL,
    owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
    what TEXT NOT NULL, target TEXT NOT NULL, count INTEGER NOT NULL, detail TEXT);
"""


def parse_store_url(url: str) -> Path:
    """The file of ``sqlite:///ABSOLUTE/PATH`` (or ``sqlite://RELATIVE/PATH``)."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if parts.scheme != "sqlite" or not path:
        raise ConfigurationError(f"not a sqlite job store URL (sqlite:///PATH): {url!r}")
    return Path(path)


def _encode_cursor(started: float, message_id: str, attempt: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([started, message_id, attempt]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str, int]:
    try:
        started, message_id, attempt = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(started), str(message_id), int(attempt)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a page cursor of this store: {cursor!r}") from exc


class SqliteStore:
    """The job store in one SQLite file; safe to share between threads and processes."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        self.path = parse_store_url(url)
        if not create and not self.path.exists():
            raise StoreError(f"job store {url} does not exist (a worker with --store creates it)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"job store {url}: {exc}") from exc
        self._lock = threading.Lock()

    def _run(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.url}: {exc}") from exc

    # -- writes --
    def put_attempt(self, row: AttemptRow) -> None:
        values = asdict(row)
        insert = (f"INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(_ATTEMPT_COLUMNS))})")
        if row.outcome is not None:
            self._run(f"INSERT OR REPLACE {insert}", [values[c] for c in _ATTEMPT_COLUMNS])
        else:  # a running row replaces only a running one: an attempt ends once
            self._run(f"INSERT {insert} ON CONFLICT (message_id, attempt) DO UPDATE SET "
                      f"{', '.join(f'{c} = excluded.{c}' for c in _ATTEMPT_COLUMNS)} WHERE outcome IS NULL",
                      [values[c] for c in _ATTEMPT_COLUMNS])

    def heartbeat(self, message_id: str, attempt: int, at: float, heartbeats: int) -> None:
        self._run("UPDATE attempts SET last_heartbeat = ?, heartbeats = MAX(heartbeats, ?) "
                  "WHERE message_id = ? AND attempt = ? AND outcome IS NULL", (at, heartbeats, message_id, attempt))

    def put_worker(self, row: WorkerRow) -> None:
        self._run("INSERT OR REPLACE INTO workers (worker, data, last_seen) VALUES (?, ?, ?)",
                  (row.worker, json.dumps(asdict(row)), row.last_seen))

    # -- reads --
    def _rows(self, sql: str, args: Iterable[Any]) -> list[AttemptRow]:
        return [AttemptRow(**dict(zip(_ATTEMPT_COLUMNS, values))) for values in self._run(sql, args)]

    def _prefilter(self, where: JobFilter) -> tuple[str, list[Any]]:
        """SQL for the filter's indexable parts; :func:`matches` applies the rest exactly."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("task", where.task), ("queue", where.queue), ("message_id", where.message_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.worker is not None:  # AttemptRow.worker, in SQL: a dashboard's worker filter pages like the rest
            clauses.append("host || ':' || pid = ?")
            args.append(where.worker)
        if where.since is not None:
            clauses.append("started >= ?")
            args.append(where.since)
        if where.until is not None:
            clauses.append("started <= ?")
            args.append(where.until)
        if where.status in ("running", "stale"):
            clauses.append("outcome IS NULL")
        elif where.status == "failed":
            clauses.append("outcome IS NOT NULL AND outcome NOT IN ('succeeded', 'cancelled', 'not run')")
        elif where.status is not None:
            clauses.append("outcome = ?")
            args.append(where.status)
        if where.text is not None:
            clauses.append("instr(kwargs, ?) > 0")
            args.append(where.text)
        if where.exception is not None:
            clauses.append("instr(exception, ?) > 0")
            args.append(where.exception)
        return " AND ".join(clauses) or "1", args

    def attempts(self, where: JobFilter, now: float, limit: int = 50, cursor: str | None = None) -> Page:
        sql, args = self._prefilter(where)
        after = _decode_cursor(cursor) if cursor is not None else None
        found: list[AttemptRow] = []
        while len(found) <= limit:  # one more than a page tells whether there is a next page
            clause, values = (sql, args) if after is None else \
                (sql + " AND (started, message_id, attempt) < (?, ?, ?)", [*args, *after])
            batch = self._rows(f"SELECT * FROM attempts WHERE {clause} ORDER BY started DESC, message_id DESC, "
                               "attempt DESC LIMIT ?", [*values, _SCAN])
            found += [row for row in batch if matches(row, where, now)]
            if len(batch) < _SCAN:
                break
            after = (batch[-1].started, batch[-1].message_id, batch[-1].attempt)
        rows = found[:limit]
        more = len(found) > limit and rows
        return Page(rows, _encode_cursor(rows[-1].started, rows[-1].message_id, rows[-1].attempt) if more else None)

    def count(self, where: JobFilter, now: float) -> int:
        sql, args = self._prefilter(where)
        if where.status not in ("running", "stale"):
            return int(self._run(f"SELECT COUNT(*) FROM attempts WHERE {sql}", args)[0][0])
        return sum(matches(row, where, now) for row in self._rows(f"SELECT * FROM attempts WHERE {sql}", args))

    def attempts_of(self, message_id: str) -> list[AttemptRow]:
        return self._rows("SELECT * FROM attempts WHERE message_id = ? ORDER BY attempt", (message_id,))

    def workers(self) -> list[WorkerRow]:
        return [WorkerRow.from_dict(json.loads(data))
                for (data,) in self._run("SELECT data FROM workers ORDER BY last_seen DESC")]

    # -- flags --
    def set_flag(self, flag: Flag) -> None:
        self._run("INSERT OR REPLACE INTO flags (message_id, kind, who, at, then_, done) VALUES (?, ?, ?, ?, ?, ?)",
                  (flag.message_id, flag.kind, flag.who, flag.at, flag.then, flag.done))

    def flags(self, message_ids: Iterable[str]) -> dict[str, Flag]:
        ids = list(message_ids)
        found: dict[str, Flag] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound on parameters per statement
            chunk = ids[start:start + 500]
            for values in self._run(f"SELECT message_id, kind, who, at, then_, done FROM flags WHERE done IS NULL "
                                    f"AND message_id IN ({', '.join('?' * len(chunk))})", chunk):
                found[values[0]] = Flag(*values)
        return found

    def flag_done(self, message_id: str, at: float, ordered: float | None = None) -> None:
        self._run("UPDATE flags SET done = ? WHERE message_id = ? AND done IS NULL AND (? IS NULL OR at = ?)",
                  (at, message_id, ordered, ordered))

    # -- claims --
    def claim(self, key: str, owner: str, now: float, ttl: float) -> bool:
        self._run("INSERT INTO claims (key, owner, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                  "owner = excluded.owner, expires = excluded.expires WHERE claims.expires <= ? OR "
                  "claims.owner = excluded.owner", (key, owner, now + ttl, now))
        return self.holder(key, now) == owner

    def renew(self, key: str, owner: str, now: float, ttl: float) -> bool:
        self._run("UPDATE claims SET expires = ? WHERE key = ? AND owner = ? AND expires > ?",
                  (now + ttl, key, owner, now))
        return self.holder(key, now) == owner

    def release(self, key: str, owner: str) -> bool:
        held = self._run("SELECT 1 FROM claims WHERE key = ? AND owner = ?", (key, owner))
        self._run("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))
        return bool(held)

    def holder(self, key: str, now: float) -> str | None:
        found = self._run("SELECT owner FROM claims WHERE key = ? AND expires > ?", (key, now))
        return found[0][0] if found else None

    # -- periodic tasks --
    def mark_fired(self, row: FiredRow) -> bool:
        # One statement: the row moves only forward, whoever races to write it.
        self._run("INSERT INTO fired (schedule, slot, at, owner) VALUES (?, ?, ?, ?) ON CONFLICT (schedule) DO "
                  "UPDATE SET slot = excluded.slot, at = excluded.at, owner = excluded.owner "
                  "WHERE fired.slot < excluded.slot", (row.schedule, row.slot, row.at, row.owner))
        return self.fired(row.schedule) == row

    def fired(self, schedule: str) -> FiredRow | None:
        found = self._run("SELECT schedule, slot, at, owner FROM fired WHERE schedule = ?", (schedule,))
        return FiredRow(*found[0]) if found else None

    # -- audit and housekeeping --
    def record_action(self, action: ActionRow) -> None:
        self._run("INSERT INTO actions (at, who, what, target, count, detail) VALUES (?, ?, ?, ?, ?, ?)",
                  (action.at, action.who, action.what, action.target, action.count, action.detail))

    def actions(self, limit: int = 100) -> list[ActionRow]:
        return [ActionRow(*values) for values in
                self._run("SELECT at, who, what, target, count, detail FROM actions ORDER BY seq DESC LIMIT ?",
                          (limit,))]

    def expire(self, now: float, success_ttl: float = SUCCESS_TTL, failure_ttl: float = FAILURE_TTL) -> int:
        gone = self._run("SELECT COUNT(*) FROM attempts WHERE outcome IS NOT NULL AND ((outcome = 'succeeded' "
                         "AND ended < ?) OR (outcome != 'succeeded' AND ended < ?))",
                         (now - success_ttl, now - failure_ttl))[0][0]
        self._run("DELETE FROM attempts WHERE outcome IS NOT NULL AND ((outcome = 'succeeded' AND ended < ?) OR "
                  "(outcome != 'succeeded' AND ended < ?))", (now - success_ttl, now - failure_ttl))
        # what DynamoDB's TTL attribute does there: orders and worker rows older than the failure TTL go too
        self._run("DELETE FROM claims WHERE expires < ?", (now - failure_ttl,))
        self._run("DELETE FROM flags WHERE at < ?", (now - failure_ttl,))
        self._run("DELETE FROM workers WHERE last_seen < ?", (now - failure_ttl,))
        return int(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()
