"""The job store's recorder: a worker observer that writes each attempt and the worker itself to the store.

One :class:`StoreRecorder` per worker process (a pool child included: ``Worker(store=URL)``
adds its maker to the observers). Everything it writes goes through the process's
:class:`~sqsmaster.store.writer.StoreWriter`, so no store call is ever made on a task's
clock: the heartbeat thread only queues the beat and reads kill orders from memory. A
reader thread (another writer, with a connection of its own) reads the flags of the
running attempts every :data:`FLAG_POLL` seconds (one ``flags()`` call). In the writer
thread, every :data:`WORKER_BEAT` seconds, the worker's row is rewritten, and about once
every :data:`EXPIRE_PERIOD` seconds (jittered, so a fleet does not expire at once) old
records are dropped. A received batch's cancels are asked once, bounded by
:data:`CANCEL_CHECK_TIMEOUT`: a store that does not answer in time lets the batch run.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from typing import Callable

from ..store import CANCEL, KILL, AttemptRow, Flag, JobStore, StoreError, WorkerRow, open_store
from ..store.base import EXCEPTION_LIMIT, FAILURE_TTL, SUCCESS_TTL, TRACEBACK_LIMIT, bounded, bounded_kwargs
from ..store.writer import StoreWriter
from .events import AttemptStart, KillOrder, WorkerEvents
from .signals import block_stop_signals
from .worklog import AttemptRecord

logger = logging.getLogger(__name__)

#: How often the running attempts' flags are read (s): a kill lands within this plus one heartbeat period.
FLAG_POLL = 1.0
#: How often the worker's own row is rewritten (s); a row older than two minutes shows as stale.
WORKER_BEAT = 30.0
#: About how often each worker process expires old records (s); the first time is jittered over the period.
EXPIRE_PERIOD = 3600.0
#: How long a received batch waits for its cancels (s) before it runs anyway.
CANCEL_CHECK_TIMEOUT = 1.0


def _leave_signals_to_the_main_thread() -> None:
    """SIGALRM (signal isolation's deadline) and the stop signals must interrupt the main thread's blocking
    call: a signal the kernel hands to a store thread would not."""
    block_stop_signals()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


class StoreRecorder(WorkerEvents):
    """Records this worker process and its attempts in the job store at ``url``.

    :param queues: the worker's queue URLs (for its row)
    :param keep_succeeded: seconds a succeeded attempt is kept (then expired)
    :param keep_failed: seconds any other finished attempt is kept
    :param opener: makes the store (default :func:`~sqsmaster.store.open_store` of ``url``), in the writer thread
    """

    def __init__(self, url: str, queues: list[str], keep_succeeded: float = SUCCESS_TTL,
                 keep_failed: float = FAILURE_TTL, opener: Callable[[], JobStore] | None = None,
                 flag_poll: float = FLAG_POLL, worker_beat: float = WORKER_BEAT,
                 expire_period: float = EXPIRE_PERIOD) -> None:
        from .. import __version__

        self.url = url
        self.keep_succeeded, self.keep_failed = keep_succeeded, keep_failed
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._lock = threading.Lock()
        self._running: dict[str, AttemptStart] = {}
        self._beats: dict[str, tuple[float, int]] = {}
        self._kills: dict[str, Flag] = {}
        self._late_cancels: set[str] = set()  # cancels ordered while their message ran: spent if it succeeds
        now = time.time()
        self._row = WorkerRow(self.host, self.pid, now, now, __version__, list(queues), concurrency=1)
        opener = opener or (lambda: open_store(url))
        self.writer = StoreWriter(opener, url, thread_setup=_leave_signals_to_the_main_thread)
        # Reads on a thread (and a connection) of their own: a backlog of writes never delays a kill or a
        # batch's cancel check.
        self.reader = StoreWriter(opener, url, capacity=1, thread_setup=_leave_signals_to_the_main_thread)
        self.writer.submit(self._put_worker)
        self.reader.every(flag_poll, self._poll_flags)
        self.writer.every(worker_beat, self._put_worker)
        self.writer.every(expire_period, self._expire, first=random.uniform(0.05, 1.0) * expire_period)

    # -- the worker's side: queue writes, answer from memory ----------------------------------------

    def attempt_started(self, start: AttemptStart) -> None:
        with self._lock:
            self._running[start.message_id] = start
        row = AttemptRow(start.message_id, start.attempt, start.task, start.queue_url, self.host, self.pid,
                         start.started, bounded_kwargs(start.kwargs), start.submitted, start.deadline, start.lease)
        self.writer.submit(lambda store: store.put_attempt(row))

    def heartbeat(self, start: AttemptStart, at: float, beats: int) -> None:
        self._beats[start.message_id] = (at, beats)
        message_id, attempt = start.message_id, start.attempt
        self.writer.submit(lambda store: store.heartbeat(message_id, attempt, at, beats),
                           key=("heartbeat", message_id, attempt))

    def kill_order(self, start: AttemptStart) -> KillOrder | None:
        flag = self._kills.get(start.message_id)
        return None if flag is None else KillOrder(f"killed by {flag.who}", flag.then)

    def cancelled(self, message_ids: list[str]) -> set[str]:
        try:  # during an outage only the first batch waits: the next find the reader still stuck, at once
            flags: dict[str, Flag] = self.reader.ask(lambda store: store.flags(message_ids), CANCEL_CHECK_TIMEOUT)
        except StoreError as exc:
            logger.warning("message(s) %s: could not check for cancels (%s); they run", ", ".join(message_ids), exc)
            return set()
        with self._lock:  # a kill ordered while the message waited applies from its first heartbeat
            self._kills.update((mid, flag) for mid, flag in flags.items() if flag.kind == KILL)
        return {mid for mid, flag in flags.items() if flag.kind == CANCEL}

    def attempt_ended(self, record: AttemptRecord) -> None:
        with self._lock:
            start = self._running.pop(record.message_id, None)
            if start is not None and start.attempt != record.attempt:
                start = None
            flag = self._kills.get(record.message_id)
            late_cancel = record.message_id in self._late_cancels
            self._late_cancels.discard(record.message_id)
            beat = self._beats.pop(record.message_id, None)
        row = self._row_of(record, start, beat)
        self.writer.submit(lambda store: store.put_attempt(row))
        # A flag is spent once carried out, or once its message is gone (a kill, or a cancel that came while the
        # task ran, whose task then succeeded); a kill that came after the task
        # failed on its own stays for the message's next attempt, and so does a kill whose --then could not be
        # done (the message kept: its next attempt is killed and the --then tried again, not run in full).
        carried_out = ((row.outcome == "killed" and row.action != "kept")
                       or (row.outcome == "cancelled" and row.action == "deleted"))
        if carried_out or ((flag is not None or late_cancel) and row.outcome == "succeeded"):
            with self._lock:
                self._kills.pop(record.message_id, None)
            message_id, ended = record.message_id, row.ended or time.time()
            # A kill spends only its own order: a cancel (or another kill) given since it was read stays.
            ordered = flag.at if flag is not None and row.outcome == "killed" else None
            self.writer.submit(lambda store: store.flag_done(message_id, ended, ordered))

    def close(self, timeout: float) -> None:
        self._row.stopped = time.time()
        self.writer.submit(self._put_worker)
        self.reader.close(0.0)
        self.writer.close(timeout)

    # -- building rows ----------------------------------------------------------------------------------

    def _row_of(self, record: AttemptRecord, start: AttemptStart | None,
                beat: tuple[float, int] | None) -> AttemptRow:
        job = record.job
        ended = job.ended if job is not None else time.time()
        return AttemptRow(
            message_id=record.message_id, attempt=record.attempt, task=record.task, queue=record.queue_url,
            host=self.host, pid=self.pid,
            started=start.started if start is not None else (job.started if job is not None else record.started_at),
            kwargs=bounded_kwargs(start.kwargs) if start is not None else None,
            submitted=start.submitted if start is not None else (job.submitted if job is not None else None),
            deadline=start.deadline if start is not None else None,
            lease=start.lease if start is not None else None,
            heartbeats=(job.heartbeats if job is not None and job.heartbeats is not None
                        else beat[1] if beat is not None else 0),
            last_heartbeat=beat[0] if beat is not None else None,
            ended=ended, outcome=job.outcome if job is not None else str(record.outcome),
            action=str(record.action), runtime=record.runtime if record.runtime is not None else
            (job.runtime if job is not None else 0.0),
            peak_memory=job.peak_memory if job is not None else None,
            exception=bounded(job.exception if job is not None else record.error, EXCEPTION_LIMIT),
            traceback=bounded(job.traceback if job is not None else None, TRACEBACK_LIMIT))

    # -- in the writer thread ----------------------------------------------------------------------------

    def _put_worker(self, store: JobStore) -> None:
        with self._lock:
            self._row.busy = len(self._running)
        self._row.last_seen = time.time()
        store.put_worker(self._row)

    def _poll_flags(self, store: JobStore) -> None:
        with self._lock:
            ids = list(self._running)
        if not ids:
            return
        flags = store.flags(ids)
        with self._lock:
            self._kills.update((mid, flag) for mid, flag in flags.items() if flag.kind == KILL)
            self._late_cancels.update(mid for mid, flag in flags.items()
                                      if flag.kind == CANCEL and mid in self._running)  # not ended meanwhile

    def _expire(self, store: JobStore) -> None:
        gone = store.expire(time.time(), self.keep_succeeded, self.keep_failed)
        if gone:
            logger.info("job store %s: %d finished attempt(s) past their time to live expired", self.url, gone)
