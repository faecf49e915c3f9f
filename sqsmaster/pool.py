"""``concurrency=N``: N worker processes, each running one task at a time in its own main thread.

Why processes that each receive for themselves, rather than one receiver
handing messages to children: signal isolation needs each task in a main
thread (SIGALRM is delivered there only), each child does its own SQS I/O so
no message is ever in a pipe where a crash could strand it, and a child that
dies (SIGKILL, out of memory) loses nothing: its message comes back after its
visibility timeout, and the parent starts a new child. ``prefetch`` applies per
child.

Signals: the parent handles SIGTERM/SIGINT and passes each one on to the
children as SIGUSR1; children ignore SIGTERM/SIGINT, so a Ctrl-C that reaches
the whole process group (or systemd's control-group SIGTERM) counts once, not twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

from .alarms import ShutdownSignals, send_shutdown
from .worker import EXIT_OK, EXIT_QUEUE, WorkerConfig, WorkerLoop

logger = logging.getLogger("sqsmaster.worker")

#: How often the parent looks at its children (s).
POOL_TICK = 0.1


def _claim(budget: Any, max_tasks: int) -> bool:
    """Take one task from the shared ``max_tasks`` budget; False when it is spent."""
    with budget.get_lock():
        if budget.value >= max_tasks:
            return False
        budget.value += 1
        return True


def _child(config: WorkerConfig, budget: Any, parent: int) -> None:
    with ShutdownSignals(signals=(signal.SIGUSR1,), grace=config.grace,
                         ignore=(signal.SIGINT, signal.SIGTERM)) as signals:
        max_tasks = config.max_tasks
        claim = (lambda: _claim(budget, max_tasks)) if max_tasks is not None else None
        code = WorkerLoop(config, signals, claim, parent).run()
    sys.exit(code)


def run_pool(config: WorkerConfig) -> int:
    """Run ``config.concurrency`` worker processes until they all end; returns the exit code."""
    context = multiprocessing.get_context("fork")
    budget = context.Value("i", 0)
    children: dict[int, Any] = {}
    code = EXIT_OK

    def start(slot: int) -> None:
        process = context.Process(target=_child, args=(config, budget, os.getpid()), name=f"sqsmaster-worker-{slot}")
        process.start()
        children[slot] = process
        logger.info("worker process %d started (pid %d)", slot, process.pid)

    with ShutdownSignals(grace=config.grace) as signals:
        for slot in range(config.concurrency):
            start(slot)
        forwarded = 0
        while children:
            if signals.received > forwarded:
                forwarded = signals.received
                for process in children.values():
                    send_shutdown(process.pid)
            for slot, process in list(children.items()):
                if process.exitcode is None:
                    continue
                del children[slot]
                if process.exitcode == EXIT_QUEUE and code == EXIT_OK:
                    code = EXIT_QUEUE
                    for other in children.values():
                        send_shutdown(other.pid)
                elif process.exitcode < 0 and not signals.stopping and code == EXIT_OK:
                    logger.error("worker process %d (pid %d) was killed by signal %d; starting another",
                                 slot, process.pid, -process.exitcode)
                    start(slot)
            time.sleep(POOL_TICK)
    return code
