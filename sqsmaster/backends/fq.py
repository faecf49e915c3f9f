"""``fq:///DIR``: a queue in a directory, for clusters that share a filesystem but have no SQS.

python-task-queue's FileQueue design, written anew with SQS semantics: one file per
message in ``DIR/queue/``, named ``VISIBLEAT_COUNT_MESSAGEID.json`` (visible-at time in
microseconds, zero-padded so names sort by it; the receive count). A receive leases a
visible message by renaming it to a later visible-at time and a count one higher; a
rename is atomic, so of two workers racing for one file exactly one wins. There are no
locks (which NFS does not reliably honour); a process killed at any moment leaves
either the old name or the new one. A new message is written to ``DIR/tmp/`` and
renamed into ``DIR/queue/``, so nobody sees half a message.

A receipt handle is ``MESSAGEID:COUNT:LEASESTART``; a handle stops working when the
message is received again (its count moved on). Extras: :meth:`FileQueue.release_all`
and the ``inserted`` / ``completed`` tallies (one byte appended per event, as in
task-queue). Every host must keep its clock in sync (visible-at times are wall clock).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

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

#: Rescan the directory at least this often (s), even while the last scan still has candidates.
RESCAN_INTERVAL = 1.0
#: Candidates are shuffled within windows of this many (oldest first overall), so workers collide less.
SHUFFLE_WINDOW = 64
#: A file in tmp/ older than this (s) is what a sender killed mid-write left behind; opening the queue removes it.
ORPHAN_AGE = 3600
#: Remembered receipt handle -> file name pairs (the rest are found by a directory scan).
HANDLE_CACHE_SIZE = 10_000
_WIDTH = 17  # digits of a microsecond wall-clock time, zero-padded so names sort by it


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _file_name(visible_at_us: int, count: int, message_id: str) -> str:
    return f"{visible_at_us:0{_WIDTH}d}_{count}_{message_id}.json"


def _parse_name(name: str) -> tuple[int, int, str] | None:
    """``(visible_at_us, receive_count, message_id)`` of a message file name; None for anything else."""
    if not name.endswith(".json"):
        return None
    parts = name[:-5].split("_", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def parse_fq_url(url: str) -> tuple[str, dict[str, str]]:
    """``(directory, options)`` of ``fq:///DIR?...`` (``fq://REL`` is relative)."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if parts.scheme != "fq" or not path:
        raise ConfigurationError(f"not a file queue URL (fq:///DIR): {url!r}")
    return path.rstrip("/") or "/", split_query(parts.query, OPTION_NAMES | {"fsync"})


class FileQueue(DurableQueue):
    """A queue in a directory, with the URL's options.

    Options: ``visibility_timeout``, ``delay_seconds``, ``max_receive_count``,
    ``dead_letter`` (a directory; ``DIR-dlq`` by default when ``max_receive_count`` is
    set) and ``fsync=1`` (fsync each new message, to survive a host crash). The
    directory is a queue once it holds ``config.json``; it is made by :meth:`create` or,
    with ``create=True`` (the default), by the first send; anything else on a queue that
    does not exist raises QueueDoesNotExist (see :mod:`sqsmaster.backends.durable`).
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.create_on_send = create
        directory, params = parse_fq_url(url)
        self.fsync = params.pop("fsync", "0") not in ("0", "", "false", "no")
        self._wanted, self._given = parse_options(params, default_dead_letter=directory + "-dlq")
        self.directory = Path(directory)
        self._queue_dir = self.directory / "queue"
        self._tmp_dir = self.directory / "tmp"
        self._config = self.directory / "config.json"
        self._candidates: list[str] = []
        self._scanned_at = float("-inf")
        self._names: dict[str, str] = {}
        self._dead_letter_dir: Path | None = None
        self._options = self._open_existing()  # an existing queue with other options is an error now

    # -- existence (see sqsmaster.backends.durable) ----------------------------------------------

    def _open_existing(self) -> QueueOptions | None:
        try:
            stored = QueueOptions(**json.loads(self._config.read_text())["options"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QueueError(f"file queue {self.url}: cannot read {self._config}: {exc}") from exc
        check_same(self.url, stored, self._wanted, self._given)
        self._dead_letter_dir = Path(str(stored.dead_letter)) / "queue" if stored.redrive() else None
        try:
            self._remove_orphans()
        except OSError as exc:
            raise QueueError(f"file queue {self.url}: {exc}") from exc
        return stored

    def _missing(self) -> str:
        if not self.directory.exists():
            return f"no directory {self.directory}"
        return f"{self.directory} is not a queue (no config.json)"

    def _create(self) -> tuple[QueueOptions, bool]:
        """Write ``config.json`` once (the first creator wins, by link(), which NFS honours); read it back."""
        new = False
        try:
            self._queue_dir.mkdir(parents=True, exist_ok=True)
            self._tmp_dir.mkdir(exist_ok=True)
            if not self._config.exists():
                tmp = self._tmp_dir / f"config-{uuid.uuid4().hex}"
                tmp.write_text(json.dumps({"options": self._wanted.to_dict(), "created": time.time()}))
                try:
                    os.link(tmp, self._config)
                    new = True
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
        except OSError as exc:
            raise QueueError(f"file queue {self.url}: {exc}") from exc
        stored = self._open_existing()
        assert stored is not None
        if stored.redrive():
            FileQueue(f"fq://{stored.dead_letter}").create()
        return stored, new

    def _remove_orphans(self) -> None:
        cutoff = time.time() - ORPHAN_AGE
        for entry in os.scandir(self._tmp_dir):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.remove(entry.path)
            except FileNotFoundError:
                pass

    def dead_letter_url(self) -> str | None:
        """The URL of this queue's dead-letter queue (None without a redrive policy)."""
        return f"fq://{self.options.dead_letter}" if self.options.redrive() else None

    # -- sending --------------------------------------------------------------------------------

    def _insert(self, entries: list[SendEntry]) -> list[str]:
        now = time.time()
        ids = []
        try:
            for entry in entries:
                message_id = str(uuid.uuid4())
                tmp = self._tmp_dir / message_id
                with open(tmp, "x") as file:
                    json.dump({"body": entry.body, "message_attributes": entry.message_attributes,
                               "group_id": entry.group_id, "sent": now}, file)
                    if self.fsync:
                        file.flush()
                        os.fsync(file.fileno())
                visible_at = now + (entry.delay_seconds or self.options.delay_seconds)
                os.rename(tmp, self._queue_dir / _file_name(_micros(visible_at), 0, message_id))
                ids.append(message_id)
        except OSError as exc:
            raise QueueError(f"file queue {self.url}: send failed after {len(ids)} message(s): {exc}") from exc
        finally:
            self._tally("insertions", len(ids))
        return ids

    def _tally(self, name: str, count: int) -> None:
        # One byte per event, appended without a lock: the file's size is the count (task-queue's trick).
        if count:
            with open(self.directory / name, "ab") as file:
                file.write(b"\0" * count)

    # -- receiving ------------------------------------------------------------------------------

    def _scan(self, now_us: int) -> None:
        visible = sorted(n for n in os.listdir(self._queue_dir) if n[:_WIDTH] <= f"{now_us:0{_WIDTH}d}")
        windows = [visible[i:i + SHUFFLE_WINDOW] for i in range(0, len(visible), SHUFFLE_WINDOW)]
        for window in windows:
            random.shuffle(window)
        self._candidates = [name for window in reversed(windows) for name in reversed(window)]  # pop() = oldest
        self._scanned_at = time.monotonic()

    def _receive_once(self, max_messages: int, timeout: int) -> list[Message]:
        try:
            return self._lease_visible(max_messages, timeout)
        except OSError as exc:
            raise QueueError(f"file queue {self.url}: receive failed: {exc}") from exc

    def _lease_visible(self, max_messages: int, timeout: int) -> list[Message]:
        now = time.time()
        now_us = _micros(now)
        if time.monotonic() - self._scanned_at > RESCAN_INTERVAL:
            self._candidates = []
        rescanned = False
        messages: list[Message] = []
        while len(messages) < max_messages:
            if not self._candidates:
                if rescanned:
                    break
                self._scan(now_us)
                rescanned = True
                continue
            parsed = _parse_name(self._candidates.pop())
            if parsed is None or parsed[0] > now_us:
                continue
            message = self._lease(parsed, now, timeout)
            if message is not None:
                messages.append(message)
        return messages

    def _lease(self, parsed: tuple[int, int, str], now: float, timeout: int) -> Message | None:
        """Take one message by renaming it; None when another worker got there first (or it went to the DLQ)."""
        visible_us, count, message_id = parsed
        source = self._queue_dir / _file_name(visible_us, count, message_id)
        if self._dead_letter_dir is not None and count >= self.options.max_receive_count:
            try:
                os.rename(source, self._dead_letter_dir / _file_name(_micros(now), count, message_id))
                logger.warning("message %s: received %d times, moved to dead-letter queue %s",
                               message_id, count, self.options.dead_letter)
            except FileNotFoundError:
                pass
            return None
        name = _file_name(_micros(now + timeout), count + 1, message_id)
        try:
            os.rename(source, self._queue_dir / name)
        except FileNotFoundError:
            return None
        try:
            with open(self._queue_dir / name) as file:
                content = json.load(file)
        except FileNotFoundError:  # purged (or released and taken) in the instant since our rename
            return None
        handle = f"{message_id}:{count + 1}:{_micros(now)}"
        self._remember(handle, name)
        attributes = {"SenderId": "local", "SentTimestamp": str(int(content["sent"] * 1000)),
                      "ApproximateReceiveCount": str(count + 1)}
        if content.get("group_id") is not None:
            attributes["MessageGroupId"] = content["group_id"]
        return Message(self, message_id, handle, content["body"], attributes,
                       content.get("message_attributes") or {}, timeout)

    def _remember(self, handle: str, name: str) -> None:
        self._names.pop(handle, None)
        if len(self._names) >= HANDLE_CACHE_SIZE:
            self._names.pop(next(iter(self._names)))
        self._names[handle] = name

    def _current_name(self, handle: str) -> tuple[str, int, int, str] | None:
        """``(file name, visible_at_us, lease start us, message id)`` the handle holds now; None if none."""
        parts = handle.split(":") if isinstance(handle, str) else []
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise LeaseLost(None, "ReceiptHandleIsInvalid", f"not a file queue receipt handle: {handle!r}")
        message_id, count, lease_us = parts[0], int(parts[1]), int(parts[2])
        name = self._names.get(handle)
        if name is None or not (self._queue_dir / name).exists():
            suffix = f"_{count}_{message_id}.json"
            name = next((n for n in os.listdir(self._queue_dir) if n.endswith(suffix)), None)
        parsed = _parse_name(name) if name else None
        if name is None or parsed is None:
            self._names.pop(handle, None)
            return None
        return name, parsed[0], lease_us, message_id

    # -- leases ---------------------------------------------------------------------------------

    def change_visibility(self, receipt_handle: str, visibility_timeout: int,
                          message_id: str | None = None) -> None:
        self._require()  # QueueDoesNotExist for a missing queue, before any file is touched
        now = time.time()
        current = self._current_name(receipt_handle)
        if current is None:
            raise LeaseLost(message_id, "MessageNotInflight", "the message was received again, deleted or moved")
        name, visible_us, lease_us, message_id = current
        if visible_us <= _micros(now):
            raise LeaseLost(message_id, "MessageNotInflight", "the lease has run out")
        if now + visibility_timeout - lease_us / 1e6 > MAX_VISIBILITY_TIMEOUT:
            raise LeaseLost(message_id, "InvalidParameterValue",
                            f"visibility would pass {MAX_VISIBILITY_TIMEOUT}s since receipt")
        count = int(receipt_handle.split(":")[1])
        new_name = _file_name(_micros(now + visibility_timeout), count, message_id)
        try:
            os.rename(self._queue_dir / name, self._queue_dir / new_name)
        except FileNotFoundError:
            raise LeaseLost(message_id, "MessageNotInflight", "another worker took the message") from None
        self._remember(receipt_handle, new_name)

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        """Delete the message; a stale handle (the message was received again) deletes nothing, as on SQS."""
        self._require()  # QueueDoesNotExist for a missing queue, before any file is touched
        current = self._current_name(receipt_handle)
        self._names.pop(receipt_handle, None)
        if current is None:
            return
        try:
            os.remove(self._queue_dir / current[0])
        except FileNotFoundError:
            return
        self._tally("completions", 1)

    # -- the queue as a whole --------------------------------------------------------------------

    def _parsed_files(self) -> list[tuple[str, tuple[int, int, str]]]:
        self._require()  # QueueDoesNotExist for a missing queue, before any file is touched
        return [(n, p) for n in os.listdir(self._queue_dir) if (p := _parse_name(n)) is not None]

    def get_attributes(self) -> dict[str, str]:
        now_us = _micros(time.time())
        visible = delayed = in_flight = 0
        for _, (visible_us, count, _) in self._parsed_files():
            if visible_us <= now_us:
                visible += 1
            elif count == 0:
                delayed += 1
            else:
                in_flight += 1
        return queue_attributes(f"arn:sqsmaster:fq:{self.directory}", visible, in_flight, delayed, self.options,
                                f"arn:sqsmaster:fq:{self.options.dead_letter}", self.dead_letter_url())

    def purge(self) -> None:
        for name, _ in self._parsed_files():
            try:
                os.remove(self._queue_dir / name)
            except FileNotFoundError:
                pass
        self._candidates = []

    def release_all(self) -> int:
        """Make every message visible now, leased or delayed (SQS cannot); returns how many moved.

        For tasks whose workers died under a long lease. Receive counts are kept, and the
        old leases are lost: their holders' heartbeats raise LeaseLost.
        """
        now_us = _micros(time.time())
        released = 0
        for name, (visible_us, count, message_id) in self._parsed_files():
            if visible_us > now_us:
                try:
                    os.rename(self._queue_dir / name, self._queue_dir / _file_name(now_us, count, message_id))
                    released += 1
                except FileNotFoundError:
                    pass
        self._candidates = []
        return released

    @property
    def inserted(self) -> int:
        """Messages ever sent to this queue (since the last :meth:`rezero`)."""
        return self._tally_count("insertions")

    @property
    def completed(self) -> int:
        """Messages deleted, i.e. tasks completed (since the last :meth:`rezero`)."""
        return self._tally_count("completions")

    def _tally_count(self, name: str) -> int:
        self._require()  # QueueDoesNotExist for a missing queue, before any file is touched
        try:
            return (self.directory / name).stat().st_size
        except FileNotFoundError:
            return 0

    def rezero(self) -> None:
        """Reset the ``inserted`` and ``completed`` tallies to zero."""
        self._require()  # QueueDoesNotExist for a missing queue, before any file is touched
        for name in ("insertions", "completions"):
            (self.directory / name).write_bytes(b"")

