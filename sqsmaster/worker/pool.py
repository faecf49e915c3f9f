"""``concurrency=N``: N worker processes, each running one task at a time in its own main thread.

Why processes that each receive for themselves, rather than one receiver
handing messages to children: signal isolation needs each task in a main
thread (SIGALRM is delivered there only), each child does its own SQS I/O so
no message is ever in a pipe where a crash could strand it, and a child that
dies (SIGKILL, out of memory, a segfault) loses nothing: its message comes back
after its visibility timeout. ``prefetch`` applies per child.

The parent supervises: a child that ends in any way but a clean stop is replaced
(at once, then with a growing pause while children keep dying young), with a log
line naming the cause; a clean stop is one the child reported (a shared value)
before exiting with that code, so a task's ``os._exit(0)`` is not mistaken for one.
The pool exits non-zero when children failed (:data:`~sqsmaster.worker.loop.EXIT_CODES`).
Children die with the parent (PR_SET_PDEATHSIG), and their task processes with them.

Signals: the parent counts every SIGTERM/SIGINT it receives (two a millisecond
apart are two, see :class:`~sqsmaster.worker.shutdown.CountedSignals`) into a counter the
children read, and nudges them with SIGUSR1; children ignore SIGTERM/SIGINT
themselves, so a Ctrl-C that reaches the whole process group (or systemd's
control-group SIGTERM) counts once, not N + 1 times. A child still alive
``grace`` + :data:`~sqsmaster.worker.shutdown.POOL_KILL_MARGIN` seconds after the first
signal is killed.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigurationError
from .loop import (
    EXIT_OK,
    EXIT_QUEUE,
    EXIT_SHUTDOWN_INCOMPLETE,
    EXIT_USAGE,
    EXIT_WORKER_DIED,
    WorkerConfig,
    WorkerLoop,
)
from .shutdown import (
    POOL_KILL_MARGIN,
    SHUTDOWN_MARGIN,
    CountedSignals,
    block_signals,
    die_with_parent,
    forget_parent_signals,
    pool_child_signals,
    unblock_signals,
)
from .signals import ShutdownSignals, send_shutdown

logger = logging.getLogger("sqsmaster.worker")

#: Longest the parent sleeps between looks at its children (s); a child's exit or a signal wakes it at once.
POOL_TICK = 0.5
#: A child that ran at least this long (s) before dying was not "dying young": restart it at once.
HEALTHY_LIFETIME = 10.0
#: Longest pause before a new child while children keep dying young (s).
MAX_RESTART_BACKOFF = 30.0
#: What a child reports before its clean exit is not yet known.
NOT_REPORTED = -1


def restart_delay(young_deaths: int) -> float:
    """Seconds before replacing a child, after ``young_deaths`` children in a row died young: 0, 1, 2, 4... 30."""
    return 0.0 if young_deaths <= 1 else float(min(2 ** (young_deaths - 2), MAX_RESTART_BACKOFF))


def describe_exit(exitcode: int, reported: int) -> str:
    """Why a child ended, in words, from its exit status and what it reported before exiting."""
    if exitcode < 0:
        name = _signal_name(-exitcode)
        hint = {"SIGKILL": " (the OOM killer, or an operator)", "SIGSEGV": " (a crash in C code)",
                "SIGABRT": " (an abort in C code)"}.get(name, "")
        return f"was killed by {name}{hint}"
    if reported == NOT_REPORTED:
        return (f"exited with code {exitcode} without stopping cleanly (a task called os._exit({exitcode}), or "
                "the worker failed: see any traceback above)")
    return f"exited with code {exitcode}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _claim(budget: Any, max_tasks: int) -> bool:
    """Take one task from the shared ``max_tasks`` budget; False when it is spent."""
    with budget.get_lock():
        if budget.value >= max_tasks:
            return False
        budget.value += 1
        return True


@dataclass
class _Shared:
    """What the parent and its children share: the task budget, the stop count and what stopped the pool."""

    budget: Any
    stops: Any
    cause: Any


def _child(config: WorkerConfig, shared: _Shared, report: Any, parent: int) -> None:
    """A pool child's main: it dies with its parent, reads its stop count, reports its exit code, exits with it."""
    forget_parent_signals()
    die_with_parent(parent)
    config = dataclasses.replace(config, exit_at_deadline=True)  # a child is a process of its own
    with ShutdownSignals(signals=(signal.SIGUSR1,), grace=config.grace, ignore=(signal.SIGINT, signal.SIGTERM),
                         stop_count=shared.stops, cause=shared.cause, margin=SHUTDOWN_MARGIN) as signals:
        unblock_signals(pool_child_signals())  # blocked by the parent around the fork, until our handlers were in
        max_tasks = config.max_tasks
        claim = (lambda: _claim(shared.budget, max_tasks)) if max_tasks is not None else None

        def say(code: int) -> None:
            report.value = code

        try:
            code = WorkerLoop(config, signals, claim, parent, report=say).run()
        except ConfigurationError as exc:  # no credentials...: the same in every child, a restart cannot help
            logger.error("%s; stopping", exc)
            code = EXIT_USAGE
    say(code)
    sys.exit(code)


@dataclass
class _Slot:
    process: Any
    report: Any
    started: float


class Pool:
    """The parent of ``config.concurrency`` worker processes; :meth:`run` returns the exit code."""

    def __init__(self, config: WorkerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._context = multiprocessing.get_context("fork")
        self._shared = _Shared(self._context.Value("i", 0), self._context.RawValue("i", 0),
                               self._context.RawValue("i", 0))
        self._slots: dict[int, _Slot] = {}
        self._restarts: dict[int, float] = {}  # slot -> when to start its next child
        self._young_deaths = 0
        self._stopped_at: float | None = None
        self._fatal = 0  # the exit code of a failure every child would meet (a missing queue...), once met
        self.died = 0
        self.incomplete = 0

    def run(self) -> int:
        with CountedSignals() as signals:
            for slot in range(self.config.concurrency):
                self._start(slot)
            while self._slots or (self._restarts and self._stopped_at is None):
                received = signals.wait(self._wait_time(), tuple(s.process.sentinel for s in self._slots.values()))
                for signum in received:
                    self._on_signal(signum)
                self._reap()
                self._restart_due()
                self._kill_late()
        return self._exit_code()

    def _wait_time(self) -> float:
        now = self._clock()
        wakes = [when - now for when in self._restarts.values()]
        if self._stopped_at is not None:
            wakes.append(self._stopped_at + self.config.grace + POOL_KILL_MARGIN - now)
        return max(0.0, min([POOL_TICK, *wakes]))

    def _start(self, slot: int) -> None:
        report = self._context.RawValue("i", NOT_REPORTED)
        # One scheduler per pool, in its first child: the parent forks replacements while it runs, and a thread
        # of its own could hold a lock (logging's, the store's) at a fork, which the new child would find taken.
        config = self.config if slot == 0 else dataclasses.replace(self.config, scheduler=False)
        process = self._context.Process(target=_child, args=(config, self._shared, report, os.getpid()),
                                        name=f"sqsmaster-worker-{slot}")
        # The child must not get a signal before its own handlers are in place (or write it into our pipe).
        before = block_signals(pool_child_signals())
        try:
            process.start()
        finally:
            unblock_signals(pool_child_signals() - before)
        self._slots[slot] = _Slot(process, report, self._clock())
        logger.info("worker process %d started (pid %d)", slot, process.pid)

    def _on_signal(self, signum: int) -> None:
        stops = self._shared.stops
        stops.value += 1
        self._shared.cause.value = signum
        name = _signal_name(signum)
        if stops.value == 1:
            self._stopped_at = self._clock()
            self._restarts.clear()
            logger.warning("%s received: stopping %d worker process(es) (no new message; running tasks have %ss to "
                           "finish; send it again to release everything now)", name, len(self._slots),
                           self.config.grace)
        elif stops.value == 2:
            logger.warning("%s received again: the worker processes release everything now", name)
        for slot in self._slots.values():
            send_shutdown(slot.process.pid)

    def _reap(self) -> None:
        for index, slot in list(self._slots.items()):
            exitcode = slot.process.exitcode
            if exitcode is None:
                continue
            del self._slots[index]
            reported = int(slot.report.value)
            clean = exitcode == reported
            if clean and exitcode == EXIT_OK:
                logger.debug("worker process %d (pid %d) stopped", index, slot.process.pid)
            elif clean and exitcode in (EXIT_QUEUE, EXIT_USAGE):
                self._stop_all("a queue does not exist" if exitcode == EXIT_QUEUE else "a configuration error",
                               exitcode)
            elif clean and exitcode == EXIT_SHUTDOWN_INCOMPLETE:
                self.incomplete += 1
            else:
                self._died(index, slot, exitcode, reported)

    def _died(self, index: int, slot: _Slot, exitcode: int, reported: int) -> None:
        self.died += 1
        cause = describe_exit(exitcode, reported)
        if self._stopped_at is not None or self._fatal:
            logger.error("worker process %d (pid %d) %s while stopping", index, slot.process.pid, cause)
            return
        lived = self._clock() - slot.started
        self._young_deaths = self._young_deaths + 1 if lived < HEALTHY_LIFETIME else 1
        delay = restart_delay(self._young_deaths)
        logger.error("worker process %d (pid %d) %s after %.1fs; starting another%s (its message comes back after "
                     "its visibility timeout)", index, slot.process.pid, cause, lived,
                     f" in {delay:.0f}s, as worker processes keep dying young" if delay else "")
        self._restarts[index] = self._clock() + delay

    def _restart_due(self) -> None:
        if self._stopped_at is not None or self._fatal:
            self._restarts.clear()
            return
        now = self._clock()
        for slot, when in list(self._restarts.items()):
            if when <= now:
                del self._restarts[slot]
                self._start(slot)

    def _stop_all(self, why: str, code: int) -> None:
        if self._fatal:
            return
        self._fatal = code
        logger.error("%s: stopping every worker process", why)
        if self._shared.stops.value == 0:
            self._shared.stops.value = 1  # the children's stop count: a stop the pool decided itself
            self._stopped_at = self._clock()
        for slot in self._slots.values():
            send_shutdown(slot.process.pid)

    def _kill_late(self) -> None:
        if self._stopped_at is None or self._clock() < self._stopped_at + self.config.grace + POOL_KILL_MARGIN:
            return
        for index, slot in list(self._slots.items()):
            logger.error("worker process %d (pid %d) still running %.0fs after the stop signal (--grace %s + %ss): "
                         "killing it; its messages come back after their visibility timeout", index, slot.process.pid,
                         self.config.grace + POOL_KILL_MARGIN, self.config.grace, POOL_KILL_MARGIN)
            slot.process.kill()
            slot.process.join()
            del self._slots[index]
            self.incomplete += 1

    def _exit_code(self) -> int:
        if self._fatal:
            return self._fatal
        if self.died:
            logger.error("%d worker process(es) died during this run (named above): exit code %d", self.died,
                         EXIT_WORKER_DIED)
            return EXIT_WORKER_DIED
        return EXIT_SHUTDOWN_INCOMPLETE if self.incomplete else EXIT_OK


def run_pool(config: WorkerConfig) -> int:
    """Run ``config.concurrency`` worker processes until they all end; returns the exit code."""
    return Pool(config).run()
