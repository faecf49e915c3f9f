"""Process isolation: the task runs in a forked child; the parent enforces its deadline by killing it.

Python runs signal handlers only between bytecodes, so a task inside one long
C call (numpy, xgboost, ``sum(range(10**12))``) stops signal isolation's
deadline. Here the parent is never inside the task: its main thread waits on the
child until the deadline, while the heartbeat thread keeps the lease. At the
deadline, or when the heartbeat thread asks (a stuck task, a lost lease with
``on_lease_lost="stop"``), the parent sends SIGTERM to the child's whole process
group, then SIGKILL after ``kill_grace`` seconds, and reaps it before going on.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from .child import ChildProcess
from .heartbeat import Heartbeat
from .policy import HeartbeatPolicy, InterruptFactory
from .supervisor import register_isolation

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL at a hard timeout, unless the handler sets ``kill_grace``.
DEFAULT_KILL_GRACE = 5.0


class ProcessSupervisor:
    """Runs each ``run()`` in a forked child and enforces the policy's deadline from the parent.

    Reads from the handler: ``kill_grace`` (seconds from SIGTERM to SIGKILL,
    default 5) and ``max_memory_mb`` (None: no cap). The overshoot past the hard
    timeout is bounded by ``kill_grace``. After a run, ``peak_memory`` is the task
    process's peak resident memory in bytes.
    """

    def __init__(self, policy: HeartbeatPolicy, handler: Any = None) -> None:
        self.policy = policy
        self.kill_grace = float(getattr(handler, "kill_grace", DEFAULT_KILL_GRACE))
        self.max_memory_mb: float | None = getattr(handler, "max_memory_mb", None)
        self.peak_memory: int | None = None
        self._child: ChildProcess | None = None
        self._heartbeat: Heartbeat | None = None
        # The heartbeat thread wakes the waiting main thread through this pipe (closed by stop()).
        self._wake_lock = threading.Lock()
        self._wake_read, self._wake_write = -1, -1

    def start(self, heartbeat: Heartbeat) -> None:
        self._heartbeat = heartbeat
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def interrupt(self, make: InterruptFactory) -> None:
        self.policy.fire(make)
        with self._wake_lock:  # never write to a descriptor stop() closed (its number may be reused)
            if self._wake_write >= 0:
                try:
                    os.write(self._wake_write, b"!")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already

    def run(self, task: Callable[[], Any]) -> Any:
        self.policy.open()
        ended_first = False
        try:
            interrupt = self.policy.take_interrupt()
            if interrupt is not None:  # fired before run(): the task does not start
                raise interrupt
            child = self._fork(task)
            try:
                ended_first = self._watch(child)
            except BaseException as exc:
                logger.warning("task process %s: %s; stopping its process group", child.pid, type(exc).__name__)
                child.kill(self.kill_grace)
                raise
            finally:
                if child.status is not None:
                    self._child = None
                    self.peak_memory = child.peak_memory
        finally:
            # Drops an interrupt fired as the child exited on its own, or that found its result already back.
            self.policy.close(ended_first)
        return child.result()  # an interrupt that reached the task was raised in _watch

    def _fork(self, task: Callable[[], Any]) -> ChildProcess:
        assert self._heartbeat is not None, "run() before start()"
        with self._heartbeat.quiet():
            child = self._child = ChildProcess(task, self.max_memory_mb)
        logger.debug("task process %s started", child.pid)
        return child

    def _watch(self, child: ChildProcess) -> bool:
        """Wait for the child; raise the policy's interrupt at the deadline or when the heartbeat asks.
        Returns True when an interrupt came after the child had sent back its result (it ended first: it
        is then left to exit, within ``kill_grace``), False when it simply exited."""
        while not child.wait(self.policy.time_to_deadline(), self._wake_read):
            self._drain_wakes()
            interrupt = self.policy.due_interrupt()
            if interrupt is None:
                continue
            # Read what the child sent before any signal reaches it: only then is "it ended first" sure.
            if child.wait(0) or child.reported():
                logger.info("task process %s: ended on its own as it was to be stopped (%s); it keeps its result",
                            child.pid, type(interrupt).__name__)
                if child.status is None and not child.wait(self.kill_grace):
                    child.kill(0)
                return True
            raise interrupt
        return False

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        """Kill and reap a child still running (an exception between fork and watch), close the pipe."""
        child, self._child = self._child, None
        try:
            if child is not None:
                child.kill(self.kill_grace)
        finally:
            with self._wake_lock:
                for fd in (self._wake_read, self._wake_write):
                    if fd >= 0:
                        os.close(fd)
                self._wake_read, self._wake_write = -1, -1


register_isolation("process", ProcessSupervisor)
