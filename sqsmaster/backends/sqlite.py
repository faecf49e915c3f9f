"""``sqlite:///PATH?queue=NAME``: a durable queue with SQS semantics on one host, in one SQLite file.

Many processes share the file. A receive is one ``BEGIN IMMEDIATE`` transaction
(select the visible messages, lease them), so no message goes to two consumers at
once; the database runs in WAL mode with a busy timeout, so a process killed at any
moment (``kill -9``) loses nothing: a transaction either committed or never happened,
and a leased message becomes visible again when its lease runs out.

Time is the wall clock (``time.time()``), shared by every process on the host.
Stdlib ``sqlite3`` only. SQLite over NFS is unsafe: use ``fq://`` on shared filesystems.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote, urlsplit

from ..errors import ConfigurationError, LeaseLost, QueueError
from ..limits import MAX_VISIBILITY_TIMEOUT
from .base import Message, SendEntry
from .durable import DurableQueue
from .options import (
    OPTION_NAMES,
    QueueOptions,
    check_same,
    parse_options,
    queue_attributes,
    split_query,
)

logger = logging.getLogger(__name__)

#: How long a writer waits for another process's transaction before giving up (ms).
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY, options TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    message_attributes TEXT NOT NULL,
    group_id TEXT,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_receive REAL,
    lease_started REAL,
    handle TEXT);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, seq);
"""

_COLUMNS = "seq, message_id, body, message_attributes, group_id, sent_at, receive_count, first_receive"


def parse_sqlite_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``(path, queue name, options)`` of ``sqlite:///PATH?queue=NAME&...`` (``sqlite://REL`` is relative)."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if parts.scheme != "sqlite" or not path:
        raise ConfigurationError(f"not a sqlite queue URL (sqlite:///PATH?queue=NAME): {url!r}")
    params = split_query(parts.query, OPTION_NAMES | {"queue", "synchronous"})
    name = params.pop("queue", "")
    if not name:  # several queues share a file (a queue and its dead-letter queue): which one must be said
        raise ConfigurationError(f"sqlite queue URL {url!r} names no queue: add ?queue=NAME "
                                 "(sqlite:///PATH?queue=NAME)")
    return path, name, params


class SqliteQueue(DurableQueue):
    """One named queue in an SQLite file; other queues (its dead-letter queue) may share the file.

    The file and the queue are created by :meth:`create` or, with ``create=True`` (the default),
    by the first send, with the URL's options (``visibility_timeout``, ``delay_seconds``,
    ``max_receive_count``, ``dead_letter``); anything else on a queue that does not exist raises
    QueueDoesNotExist (see :mod:`sqsmaster.backends.durable`).

    ``synchronous``: ``NORMAL`` (the default) survives the death of any process and keeps the
    file consistent through an OS crash, losing at most the last commits; ``FULL`` loses
    nothing on an OS crash or power loss; ``OFF`` (faster) still survives process death,
    but an OS crash can corrupt the file.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.create_on_send = create
        self.path, self.name, params = parse_sqlite_url(url)
        self.synchronous = params.pop("synchronous", "NORMAL").upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be OFF, NORMAL or FULL, not {self.synchronous!r}")
        self._wanted, self._given = parse_options(params, default_dead_letter=f"{self.name}-dlq")
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        #: How long a write waits for another connection's transaction (s) before failing.
        self.busy_timeout = BUSY_TIMEOUT_MS / 1000
        self._twins: dict[float | None, SqliteQueue] = {}
        self._twin_lock = threading.Lock()
        self._options = self._open_existing()  # an existing queue with other options is an error now

    @property
    def arn(self) -> str:
        return f"arn:sqsmaster:sqlite:{self.path}:{self.name}"

    def dead_letter_url(self) -> str | None:
        """The URL of this queue's dead-letter queue (None without a redrive policy)."""
        if not self.options.redrive():
            return None
        return f"sqlite://{quote(self.path)}?queue={quote(str(self.options.dead_letter))}"

    # -- connection and transactions ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross fork(): a child opens its own (the parent's is left alone).
        if self._connection is None or self._pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so readers never upgrade and deadlock."""
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise QueueError(f"sqlite queue {self.url}: {exc}") from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for one statement, which autocommit makes a transaction of its own."""
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.Error as exc:
                raise QueueError(f"sqlite queue {self.url}: {exc}") from exc

    # -- existence (see sqsmaster.backends.durable) ----------------------------------------------

    def _queue_names(self) -> list[str] | None:
        """The queues the file holds; None when there is no file (or no queue table). Creates nothing."""
        if not os.path.isfile(self.path):
            return None
        with self._reading() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queues'").fetchone() is None:
                return None
            return [row[0] for row in db.execute("SELECT name FROM queues ORDER BY name")]

    def _open_existing(self) -> QueueOptions | None:
        if not os.path.isfile(self.path):
            return None
        with self._reading() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queues'").fetchone() is None:
                return None
            row = db.execute("SELECT options FROM queues WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            return None
        stored = QueueOptions(**json.loads(row[0]))
        check_same(self.url, stored, self._wanted, self._given)
        return stored

    def _missing(self) -> str:
        names = self._queue_names()
        if names is None:
            return f"no queue file {self.path}" if not os.path.exists(self.path) else f"{self.path} holds no queue"
        return f"{self.path} has no queue {self.name!r}; it has {', '.join(map(repr, names)) or 'none'}"

    def _create(self) -> tuple[QueueOptions, bool]:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # as an fq:// queue's: one line naming the path, not a traceback
            raise QueueError(f"sqlite queue {self.url}: {exc}") from exc
        wanted = self._wanted
        with self._transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            new = db.execute("INSERT OR IGNORE INTO queues VALUES (?, ?, ?)",
                             (self.name, json.dumps(wanted.to_dict()), time.time())).rowcount > 0
            if wanted.redrive():
                db.execute("INSERT OR IGNORE INTO queues VALUES (?, ?, ?)",
                           (wanted.dead_letter, json.dumps(QueueOptions().to_dict()), time.time()))
            stored = QueueOptions(**json.loads(db.execute("SELECT options FROM queues WHERE name = ?",
                                                          (self.name,)).fetchone()[0]))
        check_same(self.url, stored, wanted, self._given)
        return stored, new

    # -- the backend interface -----------------------------------------------------------------

    def _insert(self, entries: list[SendEntry]) -> list[str]:
        now = time.time()
        rows = [(self.name, str(uuid.uuid4()), e.body, json.dumps(e.message_attributes) if e.message_attributes
                 else "{}", e.group_id, now, now + (e.delay_seconds or self.options.delay_seconds)) for e in entries]
        insert = ("INSERT INTO messages (queue, message_id, body, message_attributes, group_id, sent_at, "
                  "visible_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        if len(rows) == 1:
            # One statement, a transaction of its own: the write lock is not held across Python code, so a
            # task submitting in a loop leaves room for its own heartbeats (see change_visibility).
            with self._reading() as db:
                db.execute(insert, rows[0])
        else:
            with self._transaction() as db:
                db.executemany(insert, rows)
        return [row[1] for row in rows]


    def _receive_once(self, max_messages: int, timeout: int) -> list[Message]:
        now = time.time()
        leased: list[tuple[Any, ...]] = []
        with self._transaction() as db:
            while len(leased) < max_messages:
                # Rows taken by an earlier pass of this loop are still visible until the UPDATE below: skip
                # them, or a message would be leased twice in one receive (and its task run twice).
                taken = [row[0] for row in leased]
                rows = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE queue = ? AND visible_at <= ? "
                                  f"AND seq NOT IN ({', '.join('?' * len(taken))}) ORDER BY visible_at, seq LIMIT ?",
                                  (self.name, now, *taken, max_messages - len(leased))).fetchall()
                if not rows:
                    break
                dead = [row for row in rows if self._must_redrive(row[6])]
                leased.extend(row for row in rows if not self._must_redrive(row[6]))
                if not dead:
                    break
                db.executemany("UPDATE messages SET queue = ?, visible_at = ?, handle = NULL WHERE seq = ?",
                               [(self.options.dead_letter, now, row[0]) for row in dead])
                for row in dead:
                    logger.warning("message %s: received %d times, moved to dead-letter queue %s",
                                   row[1], row[6], self.options.dead_letter)
            handles = [f"{row[0]}:{row[6] + 1}:{uuid.uuid4().hex[:8]}" for row in leased]
            db.executemany("UPDATE messages SET receive_count = receive_count + 1, handle = ?, visible_at = ?, "
                           "lease_started = ?, first_receive = COALESCE(first_receive, ?) WHERE seq = ?",
                           [(h, now + timeout, now, now, row[0]) for h, row in zip(handles, leased)])
        return [self._message(row, handle, timeout, now) for row, handle in zip(leased, handles)]

    def _must_redrive(self, receive_count: int) -> bool:
        return self.options.redrive() and receive_count >= self.options.max_receive_count

    def _message(self, row: tuple[Any, ...], handle: str, timeout: int, now: float) -> Message:
        _, message_id, body, message_attributes, group_id, sent_at, count, first_receive = row
        attributes = {
            "SenderId": "local",
            "SentTimestamp": str(int(sent_at * 1000)),
            "ApproximateReceiveCount": str(count + 1),
            "ApproximateFirstReceiveTimestamp": str(int((first_receive or now) * 1000)),
        }
        if group_id is not None:
            attributes["MessageGroupId"] = group_id
        return Message(self, message_id, handle, body, attributes, json.loads(message_attributes), timeout)

    def change_visibility(self, receipt_handle: str, visibility_timeout: int,
                          message_id: str | None = None) -> None:
        """One UPDATE statement, a transaction of its own: the write lock is held only while SQLite runs it,
        never across Python code, so a heartbeat slips in between a busy task's own writes."""
        self._require()  # QueueDoesNotExist for a missing queue, before a connection would create its file
        seq = _handle_seq(receipt_handle, message_id)
        now = time.time()
        with self._reading() as db:
            changed = db.execute(
                "UPDATE messages SET visible_at = ? WHERE seq = ? AND queue = ? AND handle = ? AND visible_at > ? "
                "AND ? - lease_started <= ?", (now + visibility_timeout, seq, self.name, receipt_handle, now,
                                              now + visibility_timeout, MAX_VISIBILITY_TIMEOUT)).rowcount
            if changed:
                return
            row = db.execute("SELECT message_id, handle, visible_at FROM messages WHERE seq = ? AND queue = ?",
                             (seq, self.name)).fetchone()
        if row is None:
            raise LeaseLost(message_id, "ReceiptHandleIsInvalid", "the message was deleted or moved")
        message_id, handle, visible_at = row
        if handle != receipt_handle or visible_at <= now:
            raise LeaseLost(message_id, "MessageNotInflight", "the message is not in flight for this handle")
        raise LeaseLost(message_id, "InvalidParameterValue",
                        f"visibility would pass {MAX_VISIBILITY_TIMEOUT}s since receipt")

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        """Delete the message; a stale handle (the message was received again) deletes nothing, as on SQS."""
        self._require()  # QueueDoesNotExist for a missing queue, before a connection would create its file
        seq = _handle_seq(receipt_handle, message_id)
        with self._reading() as db:  # one statement: a transaction of its own
            db.execute("DELETE FROM messages WHERE seq = ? AND handle = ?", (seq, receipt_handle))

    def delete_batch(self, receipt_handles: list[str]) -> list[dict[str, Any]]:
        """Delete several messages in one transaction; a malformed handle fails alone."""
        self._require()  # QueueDoesNotExist for a missing queue, before a connection would create its file
        failed, pairs = [], []
        for index, handle in enumerate(receipt_handles):
            try:
                pairs.append((_handle_seq(handle, None), handle))
            except LeaseLost as exc:
                failed.append({"Id": str(index), "Code": exc.code, "Message": str(exc)})
        with self._transaction() as db:
            db.executemany("DELETE FROM messages WHERE seq = ? AND handle = ?", pairs)
        return failed

    def get_attributes(self) -> dict[str, str]:
        self._require()  # QueueDoesNotExist for a missing queue, before a connection would create its file
        now = time.time()
        with self._reading() as db:
            visible, delayed, in_flight = db.execute(
                "SELECT COALESCE(SUM(visible_at <= ?), 0), "
                "COALESCE(SUM(visible_at > ? AND receive_count = 0), 0), "
                "COALESCE(SUM(visible_at > ? AND receive_count > 0), 0) FROM messages WHERE queue = ?",
                (now, now, now, self.name)).fetchone()
            created = db.execute("SELECT created FROM queues WHERE name = ?", (self.name,)).fetchone()
        return queue_attributes(self.arn, visible, in_flight, delayed, self.options,
                                f"arn:sqsmaster:sqlite:{self.path}:{self.options.dead_letter}", self.dead_letter_url(),
                                CreatedTimestamp=str(int(created[0])) if created else "0")

    def purge(self) -> None:
        self._require()  # QueueDoesNotExist for a missing queue, before a connection would create its file
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE queue = ?", (self.name,))

    def heartbeat_queue(self, timeout: float | None = None) -> "SqliteQueue":
        """A twin with a connection of its own; with ``timeout``, a write waits at most that long for the
        lock (the task may hold it: a heartbeat must give up, not wait out the 30 s busy timeout)."""
        with self._twin_lock:
            twin = self._twins.get(timeout)
            if twin is None:
                twin = self._twins[timeout] = copy.copy(self)
                twin._lock, twin._twin_lock = threading.Lock(), threading.Lock()
                twin._connection, twin._pid, twin._twins = None, 0, {}
                if timeout is not None:
                    twin.busy_timeout = timeout
            return twin

    def close(self) -> None:
        for twin in list(self._twins.values()):
            twin.close()
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


def _handle_seq(receipt_handle: str, message_id: str | None) -> int:
    """The row a receipt handle (``SEQ:COUNT:NONCE``) names; LeaseLost if it is not one of ours.

    The handle names the row, not the message id, so a delete touches one b-tree fewer.
    """
    parts = receipt_handle.split(":") if isinstance(receipt_handle, str) else []
    if len(parts) != 3 or not parts[0].isdigit():
        raise LeaseLost(message_id, "ReceiptHandleIsInvalid", f"not a sqlite receipt handle: {receipt_handle!r}")
    return int(parts[0])

