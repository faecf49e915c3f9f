"""The task process of process isolation: fork it, wait on it, kill its process group, reap it.

The child is forked (no pickling of the handler or its kwargs). It leads its own
session, dies with the parent (PR_SET_PDEATHSIG plus a watchdog in its group for
grandchildren), must not call SQS itself, and sends back the return value of
``run()`` (when it pickles) or its exception (type, message, traceback text).

Every path ends with the child reaped and its descriptors closed: a kill is
SIGTERM to the group, SIGKILL after the grace, and a second signal (Ctrl-C,
the worker's shutdown) during the grace cuts it short to SIGKILL and the reap,
then propagates.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import pickle
import resource
import select
import signal
import sys
import time
import traceback
from typing import Any, Callable, NoReturn

from ..errors import MemoryCapExceeded, TaskCrashed, TaskFailed

logger = logging.getLogger(__name__)

#: Where pidfd_open is missing, how often the parent polls the child with waitpid (s).
POLL_INTERVAL = 0.02
#: prctl(2) option: the signal the kernel sends us when our parent thread dies (Linux only).
PR_SET_PDEATHSIG = 1
#: Dispositions a forked task gets back: the worker's own handlers (graceful shutdown, SIGALRM
#: ticks) must not run inside the task, and SIGTERM must kill it.
_RESET_IN_CHILD = ("SIGTERM", "SIGINT", "SIGHUP", "SIGALRM", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGQUIT")
_READ_CHUNK = 1 << 20
FOREVER = 365 * 24 * 3600.0
#: The raw wait status of a process killed by SIGKILL: what we record for a child someone else reaped.
_KILLED_STATUS = int(signal.SIGKILL)


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11; ``signal 99`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> bool:
    """Send ``signum`` to every process of group ``pgid``; False when the group is already empty."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        logger.warning("cannot signal process group %s: %s", pgid, exc)
        return False
    return True


def kill_process(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` (default SIGKILL) to one process; ignored when it is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL us when our parent dies; False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the loaded libc; find_library would spawn ldconfig
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def prepare_child(parent_pid: int) -> None:
    """In a freshly forked task process: lead a new session, die with the parent, default signals.

    The new session makes the task the leader of its own process group, so a
    group kill reaches its grandchildren (``subprocess``, ``os.system``).
    Exits at once (code 70) if the parent died before PR_SET_PDEATHSIG took effect.
    """
    os.setsid()
    signal.setitimer(signal.ITIMER_REAL, 0)
    for name in _RESET_IN_CHILD:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the parent may have forked with signals blocked
    if _die_with_parent() and os.getppid() != parent_pid:
        os._exit(70)  # the parent died between fork and prctl: nobody supervises us


def watch_parent(parent_pid: int, pgid: int, poll: float = 0.5) -> None:
    """Block until ``parent_pid`` dies, then SIGKILL the whole group ``pgid``; never returns.

    Runs in a small watchdog process inside the task's group, so grandchildren,
    which PR_SET_PDEATHSIG does not cover, die with the worker too.
    """
    pidfd = _pidfd_open(parent_pid)
    try:
        while True:
            if pidfd >= 0:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll()
                break
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(poll)
    finally:
        kill_group(pgid, signal.SIGKILL)
        os._exit(0)


def _pidfd_open(pid: int) -> int:
    try:
        return os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    except OSError:
        return -1


class ChildProcess:
    """A forked task process: wait on it, collect its result, kill its group, reap it."""

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

    def wait(self, timeout: float, wake_fd: int = -1) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit (reading its result meanwhile).

        Returns True once it has exited and been reaped; False after the timeout, or
        as soon as ``wake_fd`` is readable. The child's group is SIGKILLed just before
        the reap, so nothing it started outlives it.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while self.status is None:
            left = deadline - time.monotonic()
            exited, woken = self._exited(max(left, 0.0), wake_fd)
            if exited:
                self._reap()
                return True
            if woken or left <= 0:
                return False
        return True

    def descriptors(self) -> tuple[list[int], bool]:
        """What to poll for news of the child, for a caller that watches many at once: its descriptors,
        and whether they alone say when it exits (False without pidfd: poll with a short timeout too).
        When one is readable, :meth:`wait` with a timeout of 0 reads the news."""
        fds = ([] if self._eof or self._reader < 0 else [self._reader]) + ([self._pidfd] if self._pidfd >= 0 else [])
        return fds, self._pidfd >= 0

    def _exited(self, timeout: float, wake_fd: int) -> tuple[bool, bool]:
        # poll(), not select(): a busy worker may hold file descriptors above select's 1024.
        poller = select.poll()
        if not self._eof:
            poller.register(self._reader, select.POLLIN)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        else:
            timeout = min(timeout, POLL_INTERVAL)
        if wake_fd >= 0:
            poller.register(wake_fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(math.ceil(min(timeout, 3600.0) * 1000))}
        if self._reader in ready:
            self._drain()
        woken = wake_fd >= 0 and wake_fd in ready
        if self._pidfd >= 0:
            return self._pidfd in ready, woken
        # WNOWAIT: look without reaping, so the group kill in _reap cannot hit a recycled pid.
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None, woken

    def _reap(self) -> None:
        kill_group(self.pid)  # leftovers; the pid is not reusable until reaped below
        self._drain()
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # reaped already (a signal interrupted us right after the wait)
            status, usage = _KILLED_STATUS, None
        self.status = status
        if usage is not None:
            self.peak_memory = int(usage.ru_maxrss) * 1024  # Linux reports kilobytes
        self.close()

    def _drain(self) -> None:
        while not self._eof and self._reader >= 0:
            try:
                chunk = os.read(self._reader, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
            self._output += chunk

    def close(self) -> None:
        """Close our descriptors (idempotent)."""
        reader, self._reader = self._reader, -1
        if reader >= 0:
            os.close(reader)
        pidfd, self._pidfd = self._pidfd, -1
        if pidfd >= 0:
            os.close(pidfd)

    def kill(self, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL it after ``grace`` seconds, and reap the child.

        A signal that raises during the grace (a second Ctrl-C, the worker's
        WorkerShutdown) cuts it short: the group is SIGKILLed and the child reaped
        before that exception propagates.
        """
        if self.status is not None:
            return
        try:
            self._signal(int(signal.SIGTERM))
            if self.wait(grace):
                return
            logger.warning("task process %s still running %.1fs after SIGTERM; sending SIGKILL", self.pid, grace)
        except BaseException:
            self.kill_now()
            raise
        self.kill_now()

    def terminate(self) -> None:
        """SIGTERM the child's group and return at once (the caller reaps it, or calls :meth:`kill_now`)."""
        if self.status is None:
            self._signal(int(signal.SIGTERM))

    def kill_now(self) -> None:
        """SIGKILL the group and reap the child; an exception raised meanwhile (a signal) is re-raised
        only once the child is reaped, so no task process outlives its supervisor."""
        deferred: BaseException | None = None
        while self.status is None:
            try:
                self._signal(int(signal.SIGKILL))
                self.wait(FOREVER)
            except Exception:
                raise  # an error of ours, not a signal: retrying would not help
            except BaseException as exc:  # a signal's KeyboardInterrupt, SystemExit...: reap first
                deferred = deferred or exc
        if deferred is not None:
            raise deferred

    def _signal(self, signum: int) -> None:
        # Before the child's setsid() its group does not exist yet: signal the child itself.
        if not kill_group(self.pid, signum):
            kill_process(self.pid, signum)

    def reported(self) -> bool:
        """Whether the child's whole result (or error) is in, as read so far: its ``run()`` ended."""
        try:
            return bool(pickle.loads(bytes(self._output)))  # a tuple: always true
        except Exception:  # nothing yet, or only part of it
            return False

    def result(self) -> Any:
        """The child's return value; raises TaskFailed, TaskCrashed or MemoryCapExceeded for the rest."""
        assert self.status is not None, "result() before the child exited"
        signum = os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None
        code = os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None
        if code == 0 and self._output:
            try:
                kind, *payload = pickle.loads(bytes(self._output))
            except Exception as exc:  # only a value can fail to load: an error's payload is strings and bytes
                logger.warning("task process %s: the result of run() cannot be unpickled (%s: %s); returning None",
                               self.pid, type(exc).__name__, exc)
                return None
            if kind == "ok":
                return payload[0]
            type_name, message, text, original, out_of_memory = payload
            if out_of_memory and self.max_memory_mb is not None:
                raise MemoryCapExceeded(self.pid, self.max_memory_mb, f"{type_name}: {message}")
            raise TaskFailed(type_name, message, text, _unpickle(original))
        name = signal_name(signum) if signum is not None else None
        hints = ["possibly the OOM killer"] if name == "SIGKILL" else []
        if name is not None and self.max_memory_mb is not None:
            # C code whose malloc fails under RLIMIT_AS may abort or crash instead of raising MemoryError.
            hints.append(f"possibly its memory cap of {self.max_memory_mb} MiB")
        raise TaskCrashed(self.pid, code, name, "; ".join(hints))


def _unpickle(data: bytes | None) -> BaseException | None:
    try:
        original = pickle.loads(data) if data is not None else None
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
        prepare_child(parent_pid)
        watchdog = os.fork()
        if watchdog == 0:  # kills the group if the worker dies, grandchildren included
            os.close(writer)
            watch_parent(parent_pid, os.getpgrp())
        if max_memory_mb is not None:
            _limit_memory(max_memory_mb)
        task_pid = os.getpid()
        try:
            payload: tuple = ("ok", task())
        except BaseException as exc:
            if os.getpid() != task_pid:
                _leave_forked_copy(exc)
            payload = _describe(exc)
        if os.getpid() != task_pid:
            _leave_forked_copy(None)
        try:
            data = pickle.dumps(payload)
        except Exception as exc:
            logger.warning("task process %s: the result of run() cannot be pickled (%s); returning None",
                           os.getpid(), exc)
            data = pickle.dumps(("ok", None))
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(data)
        kill_process(watchdog)  # reaped here, so no zombie is left for init
        os.waitpid(watchdog, 0)
    except BaseException:
        code = 70
        traceback.print_exc()
    finally:
        _exit_flushed(code)


def _leave_forked_copy(exc: BaseException | None) -> None:
    """A process the task forked came back here (it returned, raised or called sys.exit): only the task's own
    process may report a result (its pipe is shared), nor kill the watchdog. Exit as the copy asked."""
    code = 0 if exc is None else 1
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    elif exc is not None:
        traceback.print_exc()
    _exit_flushed(code)


def _exit_flushed(code: int) -> NoReturn:
    """Flush what the task printed, then leave at once (no atexit handler, no parent's cleanup)."""
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
