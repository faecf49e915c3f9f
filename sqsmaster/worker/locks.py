"""Task locks: ``@task(lock=True)`` or ``@task(lock_key=("user_id",))``: never two runs at once.

Before a locked task runs, its worker claims ``lock:{task}`` (with ``lock_key``:
``lock:{task}:{values of those kwargs as JSON}``) in the job store for this attempt, for
:data:`LOCK_TTL_LEASES` visibility timeouts. A thread of the worker's own renews it
(never the heartbeat thread, which must not wait on the store); the lock is released
on any outcome, and a holder that dies (kill -9) lets go when its claim expires. A
task whose lock could not be renewed before it expired (the store unreachable that
long) is stopped at its next heartbeat, as a hard timeout would stop it: another
worker may hold the lock by then, and two runs must never overlap.

A message that finds its lock held does not run and is not a failure: on a standard
queue it is re-sent as a new message delayed ``lock_retry`` seconds and the original
deleted (send before delete: a crash between them leaves a duplicate, never a loss), so
neither the retry policy nor a redrive policy's ``maxReceiveCount`` ever sees the
waits (the copy starts again at receive count 1). A FIFO queue has no per-message
delay and a re-send would reorder the group: there the message is handed back with a
visibility of ``lock_retry`` seconds, which costs one receive per wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..backends import Message
from ..lease import Lease
from ..producer import copy_entry
from ..store import JobStore, open_store
from .events import AttemptStart, WorkerEvents
from .registry import Registry, TaskSpec

logger = logging.getLogger(__name__)

#: A lock lasts this many visibility timeouts of its task past its last renewal.
LOCK_TTL_LEASES = 3
#: Renewals per lock time to live: a lock survives this many missed renewals minus one.
RENEWALS_PER_TTL = 6
#: A lock is taken as lost this long before its claim would expire (s): clocks of two hosts differ a little.
EXPIRY_MARGIN = 2.0
#: Longest lock key; a longer one keeps its task name and hashes the kwargs' values.
MAX_KEY_LENGTH = 512


def lock_key(spec: TaskSpec, kwargs: dict[str, Any]) -> str:
    """The store key of ``spec``'s lock for a run with ``kwargs`` (a kwarg missing from them counts as null)."""
    key = f"lock:{spec.name}"
    if not spec.lock_key:
        return key
    values = ":".join(json.dumps(kwargs.get(name), sort_keys=True, default=str) for name in spec.lock_key)
    if len(key) + 1 + len(values) > MAX_KEY_LENGTH:
        values = "sha256:" + hashlib.sha256(values.encode()).hexdigest()
    return f"{key}:{values}"


@dataclass
class _Held:
    key: str
    owner: str
    message_id: str
    ttl: float
    valid_until: float  # monotonic: when the claim may have expired, unless renewed before
    lost_logged: bool = False


class TaskLocks(WorkerEvents):
    """The task locks of one worker process: :meth:`take` before a locked task, :meth:`release` after.

    As an observer, it answers ``keep_running`` from memory (no store call on the heartbeat
    thread): False once a held lock's claim may have expired unrenewed.
    """

    def __init__(self, store: JobStore | None, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, needed: bool = True) -> None:
        self.store = store
        #: False when no task of the worker takes a lock (then :meth:`take` only ever returns None).
        self.needed = needed
        self.clock = clock
        self.monotonic = monotonic
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def take(self, message: Message, spec: TaskSpec, kwargs: dict[str, Any], attempt: int,
             lease: float) -> str | None | Literal[False]:
        """Take the lock ``message``'s task needs: its key once held, None for a task without a lock, or False
        when it is held elsewhere (or the store does not answer): the message was then handed back to come
        again ``spec.lock_retry`` seconds later, and must not run."""
        if not spec.lock or self.store is None:  # no store: task_locks refused to start such a worker
            return None
        key = lock_key(spec, kwargs)
        owner = f"{socket.gethostname()}:{os.getpid()}:{message.message_id}:{attempt}"
        ttl = LOCK_TTL_LEASES * lease
        asked = self.monotonic()
        try:
            taken = self.store.claim(key, owner, self.clock(), ttl)
            holder = None if taken else self.store.holder(key, self.clock())
        except Exception as exc:  # StoreError: nobody can say the lock is free, so it is not
            taken, holder = False, f"nobody knows (the job store did not answer: {exc})"
        if not taken:
            hand_back(message, spec, key, holder or "a run that just ended")
            return False
        with self._lock:
            self._held[key] = _Held(key, owner, message.message_id, ttl, asked + ttl - EXPIRY_MARGIN)
        self._start_renewing()
        logger.debug("message %s: lock %s taken", message.message_id, key)
        return key

    def release(self, key: str | None | Literal[False]) -> None:
        """Let go of a lock :meth:`take` returned (None / False: nothing to do). Never raises: a lock that
        cannot be released expires by itself."""
        if not key:
            return
        with self._lock:
            held = self._held.pop(key, None)
        if held is None or self.store is None:
            return
        try:
            self.store.release(key, held.owner)
        except Exception as exc:
            logger.warning("message %s: lock %s not released (%s); it expires within %.0fs", held.message_id, key,
                           exc, held.ttl)

    def keep_running(self, start: AttemptStart) -> bool:
        with self._lock:
            held = next((h for h in self._held.values() if h.message_id == start.message_id), None)
            if held is None or held.valid_until > self.monotonic():
                return True
            first = not held.lost_logged
            held.lost_logged = True
        if first:
            logger.error("message %s: lock %s could not be renewed before it expired: stopping the task, so that "
                         "two runs never overlap", start.message_id, held.key)
        return False

    # -- renewals, on a thread of our own --
    def _start_renewing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name="sqsmaster-locks", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        while not self._closed:
            with self._lock:
                period = min([h.ttl / RENEWALS_PER_TTL for h in self._held.values()], default=1.0)
            self._wake.wait(period)
            with self._lock:
                held = list(self._held.values())
            for one in held:
                self.renew(one)

    def renew(self, held: _Held) -> None:
        """Extend one held lock; a refusal (another holder took it after it expired) makes it lost at once."""
        asked = self.monotonic()
        if self.store is None:
            return
        try:
            renewed = self.store.renew(held.key, held.owner, self.clock(), held.ttl)
        except Exception as exc:
            logger.warning("message %s: lock %s not renewed (%s); the task is stopped if it cannot be before "
                           "%.0fs", held.message_id, held.key, exc, max(held.valid_until - asked, 0.0))
            return
        with self._lock:
            if self._held.get(held.key) is not held:
                return  # released meanwhile
            held.valid_until = asked + held.ttl - EXPIRY_MARGIN if renewed else float("-inf")

    def close(self, timeout: float) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


def hand_back(message: Message, spec: TaskSpec, key: str, holder: str) -> None:
    """Make a message whose lock is held come back ``spec.lock_retry`` seconds later, without counting a
    failure (see the module's docstring); never raises."""
    delay = spec.lock_retry
    fifo = bool((getattr(message, "attributes", None) or {}).get("MessageGroupId"))
    logger.info("message %s: task %s not started: lock %s held by %s; it comes back in %ds", message.message_id,
                spec.name, key, holder, delay)
    if not fifo:
        try:
            message.queue.send(copy_entry(message, delay_seconds=delay))
        except Exception as exc:
            logger.warning("message %s: re-sending it to wait for its lock failed (%s); handing it back instead "
                           "(that counts a receive)", message.message_id, exc)
        else:
            try:
                message.delete()
            except Exception as exc:
                logger.error("message %s: re-sent to wait for its lock, but the delete of the original failed "
                             "(%s); it may run twice", message.message_id, exc)
            return
    Lease(message).release(delay)


class LazyStore:
    """The job store at ``url``, opened at its first use and again after an open that failed: a store that
    cannot be reached when the worker starts is the same as one that stops answering later (each call raises
    StoreError: a locked task's message waits, a slot waits for the next pass), not a worker that cannot
    start. Every other attribute is the store's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: JobStore | None = None
        self._lock = threading.Lock()

    def opened(self) -> JobStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.url)
            return self._store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.opened(), name)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def task_locks(registry: Registry, store: JobStore | None) -> TaskLocks:
    """The locks of one worker process (``needed`` False when no task takes a lock). Raises ConfigurationError
    when one does and there is no job store to hold it."""
    locked = [name for name in registry.names() if registry.get(name).lock]
    if not locked:
        return TaskLocks(store, needed=False)
    if store is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"task(s) {', '.join(locked)} take a lock, which lives in the job store: give "
                                 "the worker --store URL (or SQSMASTER_STORE)")
    return TaskLocks(store)
