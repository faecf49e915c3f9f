"""A local parallel map: run a function over many inputs in N processes, each call supervised.

ezpq's ``Queue.map/put`` and python-task-queue's ``LocalTaskQueue`` for one machine, with what
they lack: every call runs in a process of its own, forked (so lambdas and closures work and
nothing is pickled on the way in), in its own process group, killed with that group at its hard
timeout (SIGTERM, SIGKILL after ``kill_grace``) even inside C code, capped at ``max_memory_mb``,
and dying with the parent (Ctrl-C, SIGTERM, even SIGKILL of the parent leave no child behind)::

    import sqsmaster

    results = sqsmaster.map(score, rows, processes=4, hard_timeout=60, max_memory_mb=2048)
    values = [r.value for r in results if r.ok]
    failed = [(r.index, r.exception) for r in results if not r.ok]

A failure never stops the others: each input gets a :class:`MapResult` (outcome, value, the
exception and its traceback, runtime, peak memory), like a ``concurrent.futures.Future``
(``result.result()`` returns the value or raises) and like ezpq's job records, because a run of
hours must not lose 9,999 results to the one input that failed. :class:`LocalPool` adds ezpq's
``put`` with priorities (a lower number starts first) and lanes (the jobs of one lane run one at
a time, in the order they were put), and ``timeline(path)`` draws the run like a worker's job log.

The parent is one thread: it forks, polls the children's descriptors and kills on time; jobs
start when results are asked for (:meth:`LocalPool.results`, :meth:`LocalPool.as_completed`).
A process per call costs a fork (about a millisecond, see ``bench/map_bench.py``): this is for
calls that take a while, not for millions of microsecond ones (use ``multiprocessing.Pool``).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Iterable, Iterator

from ..errors import ConfigurationError, HardTimeoutExceeded, TaskCrashed, TaskFailed
from ..outcomes import Outcome
from ..supervise.child import POLL_INTERVAL, ChildProcess
from ..supervise.process import DEFAULT_KILL_GRACE
from ..worker.jobs import JobRecord
from .progress import progress_bar

logger = logging.getLogger(__name__)

#: Exit status of a parent stopped by SIGTERM during a map (128 + 15, as a shell reports it).
SIGTERM_EXIT = 143


@dataclass
class MapResult:
    """What became of one call: ``outcome`` (succeeded, failed, timed out, killed), ``value`` (its return
    value, when it pickles), ``error`` (the exception, re-raised by :meth:`result`), ``exception``
    (``"ValueError: ..."``) and ``traceback`` (the child's), times (wall clock), ``peak_memory`` (bytes)."""

    index: int
    name: str
    outcome: str = Outcome.NOT_RUN
    value: Any = None
    error: BaseException | None = None
    exception: str | None = None
    traceback: str | None = None
    submitted: float = 0.0
    started: float | None = None
    ended: float | None = None
    peak_memory: int | None = None
    slot: int = 0
    priority: float = 0
    lane: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED

    @property
    def runtime(self) -> float:
        return 0.0 if self.started is None or self.ended is None else self.ended - self.started

    def result(self) -> Any:
        """The value, or raise the call's exception (like ``Future.result()``)."""
        if self.error is not None:
            raise self.error
        return self.value

    def record(self) -> JobRecord:
        """A job record for :mod:`sqsmaster.ops.report` (its summary and timeline): one row group per slot."""
        started = self.started if self.started is not None else self.submitted
        return JobRecord(message_id=str(self.index), task=self.name, attempt=1,
                         host=f"{socket.gethostname()}/slot{self.slot}", pid=os.getpid(), submitted=self.submitted,
                         started=started, ended=self.ended or started, runtime=self.runtime, outcome=str(self.outcome),
                         exception=self.exception, traceback=self.traceback, peak_memory=self.peak_memory)


@dataclass
class _Job:
    result: MapResult
    call: Callable[[], Any]
    child: ChildProcess | None = None
    deadline: float = float("inf")
    kill_at: float = float("inf")
    started_at: float = 0.0
    timed_out: bool = False
    order: tuple[float, int] = field(default=(0.0, 0))


class LocalPool:
    """Run calls in up to ``processes`` supervised child processes (default: the CPU count).

    :param hard_timeout: seconds a call may run before its process group is killed (None: no limit)
    :param max_memory_mb: address-space cap of each call's process (MemoryError, or its death, past it)
    :param kill_grace: seconds from SIGTERM to SIGKILL at the hard timeout
    :param progress: show a progress bar (tqdm's when installed) while results are collected

    Use it as a context manager, or call :meth:`close`: any call still running is killed and reaped.
    Not thread-safe: use a pool from one thread.
    """

    def __init__(self, processes: int | None = None, *, hard_timeout: float | None = None,
                 max_memory_mb: float | None = None, kill_grace: float = DEFAULT_KILL_GRACE,
                 progress: bool = False, description: str = "map") -> None:
        processes = (os.cpu_count() or 1) if processes is None else processes
        if not isinstance(processes, int) or processes < 1:
            raise ConfigurationError(f"processes must be a positive integer, not {processes!r}")
        for name, value in (("hard_timeout", hard_timeout), ("max_memory_mb", max_memory_mb),
                            ("kill_grace", kill_grace)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds/MiB, not {value!r}")
        self.processes = processes
        self.hard_timeout = hard_timeout
        self.max_memory_mb = max_memory_mb
        self.kill_grace = float(kill_grace)
        self.progress = progress
        self.description = description
        self._jobs: list[_Job] = []
        self._ready: list[tuple[tuple[float, int], _Job]] = []  # a heap: (priority, put order)
        self._lanes: dict[Any, deque[_Job]] = {}  # lane -> its jobs after the one ready or running
        self._running: dict[int, _Job] = {}  # slot -> job
        self._finished = 0

    def put(self, func: Callable[..., Any], args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
            priority: float = 0, lane: Any = None, name: str | None = None) -> int:
        """Queue ``func(*args, **kwargs)``; returns its index (its place in :meth:`results`).

        Lower ``priority`` starts first (ties in put order). Jobs with the same ``lane`` run one
        at a time, in put order (a lane's priority is its first waiting job's).
        """
        if not callable(func):
            raise ConfigurationError(f"put() takes a callable, not {func!r:.100}")
        args, kwargs = tuple(args), dict(kwargs or {})
        index = len(self._jobs)
        result = MapResult(index, name or str(getattr(func, "__name__", "call")), submitted=time.time(),
                           priority=priority, lane=lane)
        job = _Job(result, lambda: func(*args, **kwargs), order=(priority, index))
        self._jobs.append(job)
        if lane is not None and lane in self._lanes:
            self._lanes[lane].append(job)  # behind the lane's job that is ready or running
        else:
            if lane is not None:
                self._lanes[lane] = deque()
            heapq.heappush(self._ready, (job.order, job))
        return index

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], *, priority: float = 0) -> list[int]:
        """Queue ``func(item)`` for each item; returns their indexes."""
        return [self.put(func, (item,), priority=priority) for item in iterable]

    def results(self) -> list[MapResult]:
        """Run every queued call and return all results, in put order (a failure does not stop the others)."""
        for _ in self.as_completed():
            pass
        return [job.result for job in self._jobs]

    def as_completed(self) -> Iterator[MapResult]:
        """Run the queued calls, yielding each result as its call ends. Leaving the loop early (``break``,
        an exception) kills and reaps the calls still running; the ones not started stay queued."""
        bar = progress_bar(len(self._jobs), self.description) if self.progress else None
        try:
            with _sigterm_exits():
                while self._ready or self._running:
                    self._start_ready()
                    for job in self._wait():
                        self._finished += 1
                        if bar is not None:
                            bar.update_to(self._finished)
                        yield job.result
        finally:
            self.kill_running()
            if bar is not None:
                bar.close()

    def records(self) -> list[JobRecord]:
        """Job records of the calls that ran, for :func:`sqsmaster.ops.report.format_summary` and the timeline."""
        return [job.result.record() for job in self._jobs if job.result.ended is not None]

    def timeline(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        """Draw the run as a Gantt chart (needs matplotlib: ``pip install 'sqsmaster[plot]'``)."""
        from .report import draw_timeline

        draw_timeline(self.records(), path, title or f"{len(self.records())} calls, {self.processes} processes")

    def kill_running(self) -> None:
        """SIGKILL and reap every call still running; their results say ``killed``. A signal's exception
        raised meanwhile (a second Ctrl-C) is re-raised once every one of them is reaped."""
        deferred: BaseException | None = None
        for slot, job in list(self._running.items()):
            assert job.child is not None
            try:
                job.child.kill_now()
            except BaseException as exc:  # kill_now reaped its child before re-raising: go on with the others
                deferred = deferred or exc
            del self._running[slot]
            self._settle(job, TaskCrashed(job.child.pid, None, "SIGKILL", "the map was stopped"))
        if deferred is not None:
            raise deferred

    def close(self) -> None:
        self.kill_running()

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _start_ready(self) -> None:
        while self._ready and len(self._running) < self.processes:
            _, job = heapq.heappop(self._ready)
            slot = min(set(range(1, self.processes + 1)) - set(self._running))
            job.result.slot, job.result.started = slot, time.time()
            job.started_at = time.monotonic()
            if self.hard_timeout is not None:
                job.deadline = job.started_at + self.hard_timeout
            with _stop_signals_held():  # a Ctrl-C between the fork and this line would leave the call unwatched
                job.child = ChildProcess(job.call, self.max_memory_mb)
                self._running[slot] = job

    def _wait(self) -> list[_Job]:
        """Block until a call ends or a deadline comes; returns the jobs that ended (results settled)."""
        now = time.monotonic()
        poller, short = select.poll(), False
        for job in self._running.values():
            assert job.child is not None
            fds, complete = job.child.descriptors()
            short = short or not complete
            for fd in fds:
                poller.register(fd, select.POLLIN)
        timeout = min([min(job.deadline, job.kill_at) - now for job in self._running.values()] + [3600.0])
        if short:
            timeout = min(timeout, POLL_INTERVAL)
        poller.poll(max(0, int(timeout * 1000) + 1))
        ended = []
        for slot, job in list(self._running.items()):
            if self._check(job):
                del self._running[slot]
                ended.append(job)
        return ended

    def _check(self, job: _Job) -> bool:
        """Reap ``job``'s child if it ended, enforce its deadline; True once its result is settled."""
        child = job.child
        assert child is not None
        if child.wait(0):
            error: BaseException | None = None
            if job.timed_out:  # sticky: a call that returned during the grace still ran past its deadline
                error = HardTimeoutExceeded(float(self.hard_timeout or 0), time.monotonic() - job.started_at)
            else:
                try:
                    job.result.value = child.result()
                except (TaskFailed, TaskCrashed) as exc:
                    error = exc
            self._settle(job, error)
            return True
        now = time.monotonic()
        if now >= job.kill_at:
            logger.warning("map call %d (process %s) still running %.1fs after SIGTERM; sending SIGKILL",
                           job.result.index, child.pid, self.kill_grace)
            child.kill_now()
            return self._check(job)
        if now >= job.deadline and not job.timed_out:
            logger.warning("map call %d (process %s) ran past its hard timeout of %ss; stopping its process group",
                           job.result.index, child.pid, self.hard_timeout)
            job.timed_out, job.kill_at = True, now + self.kill_grace
            child.terminate()
        return False

    def _settle(self, job: _Job, error: BaseException | None) -> None:
        result = job.result
        result.ended = time.time()
        result.peak_memory = job.child.peak_memory if job.child is not None else None
        if job.result.lane is not None:
            self._next_in_lane(job.result.lane)
        if error is None:
            result.outcome = Outcome.SUCCEEDED
            return
        if isinstance(error, HardTimeoutExceeded):
            result.outcome = Outcome.TIMED_OUT
        elif isinstance(error, TaskCrashed) and error.signal:
            result.outcome = Outcome.KILLED
        else:
            result.outcome = Outcome.FAILED
        original = error.original if isinstance(error, TaskFailed) else None
        result.error = original if original is not None else error
        result.exception = (f"{error.type_name}: {error.message}" if isinstance(error, TaskFailed)
                            else f"{type(error).__name__}: {error}")
        result.traceback = error.remote_traceback if isinstance(error, TaskFailed) else None
        logger.debug("map call %d: %s (%s)", result.index, result.outcome, result.exception)

    def _next_in_lane(self, lane: Any) -> None:
        waiting = self._lanes.get(lane)
        if waiting:
            job = waiting.popleft()
            heapq.heappush(self._ready, (job.order, job))
        else:
            self._lanes.pop(lane, None)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (delivered on leaving) in this thread; the forked call unblocks them."""
    stops = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _sigterm_exits:  # noqa: N801 (a context manager used like a function)
    """While a map runs in the main thread with SIGTERM's default action, SIGTERM raises SystemExit(143)
    instead of killing the parent outright, so the running calls are killed and reaped first."""

    def __enter__(self) -> None:
        self._installed = (threading.current_thread() is threading.main_thread()
                           and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        if self._installed:
            signal.signal(signal.SIGTERM, _raise_exit)

    def __exit__(self, *exc_info: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(SIGTERM_EXIT)


def map(func: Callable[[Any], Any], iterable: Iterable[Any], processes: int | None = None, *,  # noqa: A001
        hard_timeout: float | None = None, max_memory_mb: float | None = None, priority: float = 0,
        progress: bool = False, kill_grace: float = DEFAULT_KILL_GRACE) -> list[MapResult]:
    """``func(item)`` for each item in up to ``processes`` supervised processes; the results in input order.

    Every item gets its :class:`MapResult`, whatever the others did; ``[r.result() for r in results]``
    raises the first failure instead, as ``concurrent.futures`` does. See :class:`LocalPool`.
    """
    with LocalPool(processes, hard_timeout=hard_timeout, max_memory_mb=max_memory_mb, kill_grace=kill_grace,
                   progress=progress) as pool:
        pool.map(func, iterable, priority=priority)
        return pool.results()


def imap_unordered(func: Callable[[Any], Any], iterable: Iterable[Any], processes: int | None = None, *,
                   hard_timeout: float | None = None, max_memory_mb: float | None = None,
                   progress: bool = False, kill_grace: float = DEFAULT_KILL_GRACE) -> Iterator[MapResult]:
    """Like :func:`map`, yielding each result as its call ends (``result.index`` is its input's place).
    Breaking out of the loop kills and reaps the calls still running."""
    with LocalPool(processes, hard_timeout=hard_timeout, max_memory_mb=max_memory_mb, kill_grace=kill_grace,
                   progress=progress) as pool:
        pool.map(func, iterable)
        yield from pool.as_completed()
