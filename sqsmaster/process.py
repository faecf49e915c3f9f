"""Process isolation: the task runs in a forked child; the parent heartbeats and kills on time.

Python runs signal handlers only between bytecodes, so a task inside one long
C call (numpy, xgboost, ``sum(range(10**12))``) stops signal isolation's
heartbeat and hard timeout. Here the parent process is never inside the task:
it waits on the child in ticks, drives the same
:class:`~sqsmaster.lease.HeartbeatPolicy` as signal isolation, does all SQS I/O,
and at the hard timeout sends SIGTERM to the child's whole process group, then
SIGKILL after ``kill_grace`` seconds.

The child is forked (no pickling of the handler or its kwargs). It leads its own
session, dies with the parent (PR_SET_PDEATHSIG plus a watchdog in its group for
grandchildren), must not call SQS itself, and sends back the return value of
``run()`` (when it pickles) or its exception (type, message, traceback text).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import resource
import select
import sys
import time
import traceback
from typing import Any, Callable

from . import alarms
from .errors import MemoryCapExceeded, TaskCrashed, TaskFailed
from .lease import HeartbeatPolicy
from .supervisor import register_isolation

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL at a hard timeout, unless the handler sets ``kill_grace``.
DEFAULT_KILL_GRACE = 5.0
#: Where pidfd_open is missing, how often the parent polls the child with waitpid (s).
POLL_INTERVAL = 0.02
_READ_CHUNK = 1 << 20
FOREVER = 365 * 24 * 3600.0


class ChildProcess:
    """A forked task process: wait on it in ticks, collect its result, kill its group."""

    def __init__(self, task: Callable[[], Any], max_memory_mb: float | None = None) -> None:
        self.max_memory_mb = max_memory_mb
        parent_pid = os.getpid()
        reader, writer = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(reader)
            os.close(writer)
            raise
        if pid == 0:  # the child never returns from here
            os.close(reader)
            _child_main(task, writer, parent_pid, max_memory_mb)
        os.close(writer)
        os.set_blocking(reader, False)
        self.pid = pid
        self.status: int | None = None
        #: The child's peak resident memory in bytes (its ``ru_maxrss`` from ``wait4``), once reaped.
        self.peak_memory: int | None = None
        self._reader = reader
        self._output = bytearray()
        self._eof = False
        self._pidfd = _pidfd_open(pid)

    def alive(self) -> bool:
        return self.status is None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit (reading its result meanwhile).

        Returns True once it has exited and been reaped. The child's group is
        SIGKILLed just before the reap, so nothing it started outlives it.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while self.status is None:
            left = deadline - time.monotonic()
            if self._exited(max(left, 0.0)):
                alarms.kill_group(self.pid)  # leftovers; the pid is not reusable until reaped below
                self._drain()
                _, self.status, usage = os.wait4(self.pid, 0)
                self.peak_memory = int(usage.ru_maxrss) * 1024  # Linux reports kilobytes
                self._close()
                return True
            if left <= 0:
                return False
        return True

    def _exited(self, timeout: float) -> bool:
        # poll(), not select(): a busy worker may hold file descriptors above select's 1024.
        poller = select.poll()
        if not self._eof:
            poller.register(self._reader, select.POLLIN)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        else:
            timeout = min(timeout, POLL_INTERVAL)
        ready = {fd for fd, _ in poller.poll(math.ceil(min(timeout, 3600.0) * 1000))}
        if self._reader in ready:
            self._drain()
        if self._pidfd >= 0:
            return self._pidfd in ready
        # WNOWAIT: look without reaping, so the group kill above cannot hit a recycled pid.
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _drain(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(self._reader, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
            self._output += chunk

    def _close(self) -> None:
        os.close(self._reader)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def kill(self, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL it after ``grace`` seconds, and reap the child."""
        if self.status is not None:
            return
        self._signal(alarms.terminate_signal())
        if not self.wait(grace):
            logger.warning("task process %s still running %.1fs after SIGTERM; sending SIGKILL", self.pid, grace)
            self._signal(alarms.KILL)
            self.wait(FOREVER)

    def _signal(self, signum: int) -> None:
        # Before the child's setsid() its group does not exist yet: signal the child itself.
        if not alarms.kill_group(self.pid, signum):
            alarms.kill_process(self.pid, signum)

    def result(self) -> Any:
        """The child's return value; raises TaskFailed, TaskCrashed or MemoryCapExceeded for the rest."""
        assert self.status is not None, "result() before the child exited"
        signum = os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None
        code = os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None
        if code == 0 and self._output:
            kind, *payload = pickle.loads(bytes(self._output))
            if kind == "ok":
                return payload[0]
            type_name, message, text, original, out_of_memory = payload
            if out_of_memory and self.max_memory_mb is not None:
                raise MemoryCapExceeded(self.pid, self.max_memory_mb, f"{type_name}: {message}")
            raise TaskFailed(type_name, message, text, _unpickle(original))
        name = alarms.signal_name(signum) if signum is not None else None
        hints = ["possibly the OOM killer"] if name == "SIGKILL" else []
        if name is not None and self.max_memory_mb is not None:
            # C code whose malloc fails under RLIMIT_AS may abort or crash instead of raising MemoryError.
            hints.append(f"possibly its memory cap of {self.max_memory_mb} MiB")
        raise TaskCrashed(self.pid, code, name, "; ".join(hints))


def _pidfd_open(pid: int) -> int:
    try:
        return os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    except OSError:
        return -1


def _unpickle(data: bytes | None) -> BaseException | None:
    if data is None:
        return None
    try:
        original = pickle.loads(data)
    except Exception:
        return None
    return original if isinstance(original, BaseException) else None


def _describe(exc: BaseException) -> tuple:
    try:
        original: bytes | None = pickle.dumps(exc)
    except Exception:
        original = None
    return ("error", type(exc).__qualname__, str(exc), traceback.format_exc(), original,
            isinstance(exc, MemoryError))


def _child_main(task: Callable[[], Any], writer: int, parent_pid: int, max_memory_mb: float | None) -> None:
    """The forked child: set up, run the task, send back ("ok", value) or ("error", ...); never returns."""
    code = 0
    try:
        alarms.prepare_child(parent_pid)
        watchdog = os.fork()
        if watchdog == 0:  # kills the group if the worker dies, grandchildren included
            os.close(writer)
            alarms.watch_parent(parent_pid, os.getpgrp())
        if max_memory_mb is not None:
            _limit_memory(max_memory_mb)
        try:
            payload: tuple = ("ok", task())
        except BaseException as exc:
            payload = _describe(exc)
        try:
            data = pickle.dumps(payload)
        except Exception as exc:
            logger.warning("task process %s: the result of run() cannot be pickled (%s); returning None",
                           os.getpid(), exc)
            data = pickle.dumps(("ok", None))
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(data)
        alarms.kill_process(watchdog)  # reaped here, so no zombie is left for init
        os.waitpid(watchdog, 0)
    except BaseException:
        code = 70
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _limit_memory(max_memory_mb: float) -> None:
    """Cap the address space at what the process maps now plus ``max_memory_mb`` MiB (RLIMIT_AS)."""
    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        mapped = 0
    limit = mapped + int(max_memory_mb * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class ProcessSupervisor:
    """Runs each ``run()`` in a forked child and drives the heartbeat policy from the parent.

    Reads from the handler: ``kill_grace`` (seconds from SIGTERM to SIGKILL,
    default 5) and ``max_memory_mb`` (None: no cap). The overshoot past the hard
    timeout is bounded by ``kill_grace`` (plus a tick). After a run, ``peak_memory``
    is the task process's peak resident memory in bytes.
    """

    def __init__(self, policy: HeartbeatPolicy, handler: Any = None) -> None:
        self.policy = policy
        self.kill_grace = float(getattr(handler, "kill_grace", DEFAULT_KILL_GRACE))
        self.max_memory_mb: float | None = getattr(handler, "max_memory_mb", None)
        self._next_tick = 0.0
        self._child: ChildProcess | None = None
        self.peak_memory: int | None = None

    def start(self) -> None:
        self._next_tick = time.monotonic() + self.policy.start()

    def run(self, task: Callable[[], Any]) -> Any:
        child = self._child = ChildProcess(task, self.max_memory_mb)
        logger.debug("task process %s started", child.pid)
        try:
            while not child.wait(self._next_tick - time.monotonic()):
                self._next_tick = time.monotonic() + self.policy.tick()
        except BaseException as exc:
            logger.warning("task process %s: %s; stopping its process group", child.pid, type(exc).__name__)
            child.kill(self.kill_grace)
            raise
        finally:
            self._child = None
            self.peak_memory = child.peak_memory
        return child.result()

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill(self.kill_grace)


register_isolation("process", ProcessSupervisor)
