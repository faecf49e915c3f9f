"""Tasks for the metrics tests (tests/test_metrics.py), beside tests.worker_tasks."""

from __future__ import annotations

import ctypes
import signal
import time

from sqsmaster import MessageHandler, fixed, task

from .worker_tasks import record


@task
def hold_gil(id: str, seconds: float) -> None:
    """Holds the GIL for ``seconds`` in one C call, as a native solver does: no other thread of the process
    (the heartbeat's) runs meanwhile. SIGALRM is held back so the call is not cut short by the worker's tick."""
    record("start", id=id)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    time.sleep(1)  # the starved heartbeat runs now, late, before the task ends and its heartbeat stops
    record("end", id=id)


@task(retry=fixed(0, max_retries=0))
def nap_once(id: str, seconds: float) -> None:
    """Sleeps (past the worker's hard timeout, in the tests) and is not retried."""
    record("start", id=id)
    time.sleep(seconds)


@task(name="over_cap", isolation="process", retry=fixed(0, max_retries=0))
class OverCap(MessageHandler):
    """Allocates past its memory cap, in a process of its own: MemoryCapExceeded, not retried."""

    max_memory_mb = 64

    def run(self) -> None:
        record("start", id=self.kwargs["id"])
        block = bytearray(512 * 2**20)
        record("end", id=self.kwargs["id"], size=len(block))
