"""Process isolation: heartbeats through GIL-holding C code, kills on time, and every way a task can die.

Real processes and signals against moto over HTTP; pids are checked in /proc.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sqsmaster import (
    HardTimeoutExceeded,
    MemoryCapExceeded,
    MessageHandler,
    TaskCrashed,
    TaskFailed,
    TaskManager,
)

from .conftest import queue_counts

ROOT = Path(__file__).resolve().parent.parent


def segfault() -> None:
    """A real SIGSEGV (pytest's faulthandler would print the crash; it is expected here)."""
    faulthandler.disable()
    ctypes.string_at(0)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not reaped by init, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(*pids: int, within: float = 3.0) -> list[int]:
    """Pids still alive after ``within`` seconds."""
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [pid for pid in pids if alive(pid)]


def wait_for_file(path: Path, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


class Recorded(MessageHandler):
    """A process-isolated handler that records what notify received (in the parent)."""

    isolation = "process"
    kill_grace = 0.5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.notified: list[BaseException] = []

    def notify(self, exception, context=None):
        self.notified.append(exception)


class CCall(Recorded):
    """One C call that holds the GIL for ``n`` steps; writes its pid first."""

    def run(self):
        Path(self.kwargs["pid_file"]).write_text(f"{os.getpid()}\n")
        return sum(range(self.kwargs["n"]))


def receive_one(url: str, sqs_timeout: int):
    tm = TaskManager(url)
    _, kwargs, message = next(tm.task_generator(wait_time=1, sqs_timeout=sqs_timeout))
    return kwargs, message


def test_a_c_call_holding_the_gil_is_killed_at_its_hard_timeout(make_queue, sqs_client, tmp_path):
    # Given a task stuck in one C call that would take hours
    url = make_queue()
    TaskManager(url).submit("CCall", n=10**13, pid_file=str(tmp_path / "pid"))
    kwargs, message = receive_one(url, sqs_timeout=30)

    # When it runs in process isolation with a 1 s hard timeout
    with CCall(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=1, **kwargs) as handler:
        handler.run()

    # Then it is gone on time (runtime: from the start of supervision to the task reaped, within the
    # 0.5 s grace; SIGTERM ends a C call at once), reported as a timeout, and the message comes back
    child = int((tmp_path / "pid").read_text())
    assert handler.outcome == "timed out"
    assert isinstance(handler.notified[0], HardTimeoutExceeded)
    assert 1.0 <= handler.runtime < 1.5
    assert not alive(child)
    time.sleep(1.2)  # the 1 s retry backoff
    assert queue_counts(sqs_client, url) == (1, 0, 0)


class HeldSleep(Recorded):
    """One C call that holds the GIL for exactly ``seconds``: libc's sleep() through ``ctypes.PyDLL``,
    which, unlike ``ctypes.CDLL``, keeps the GIL during the call. A calibrated ``sum(range(n))``
    was tried first; on a loaded machine its calibration came out 20% short."""

    def run(self):
        Path(self.kwargs["pid_file"]).write_text(f"{os.getpid()}\n")
        unslept = ctypes.PyDLL(None).sleep(self.kwargs["seconds"])
        return self.kwargs["seconds"] - unslept


def test_a_c_call_three_times_the_visibility_timeout_is_never_seen_by_another_consumer(
        make_queue, sqs_client, tmp_path):
    # Given a C call holding the GIL for 3x the queue's 2 s visibility timeout
    url = make_queue(visibility_timeout=2)
    TaskManager(url).submit("HeldSleep", seconds=6, pid_file=str(tmp_path / "pid"))
    kwargs, message = receive_one(url, sqs_timeout=2)

    # And a second consumer polling the queue all along
    stolen: list = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            stolen.extend(sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []))
            time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        # When it runs in process isolation
        started = time.monotonic()
        with HeldSleep(message, sqs_timeout=2, alarm_timeout=0.9, hard_timeout=60, **kwargs) as handler:
            result = handler.run()
        ran = time.monotonic() - started
    finally:
        stop.set()
        poller.join()

    # Then the parent heartbeat through the C call, the result came back, nobody else saw the
    # message, and it was deleted (once: no other receive ever got a receipt handle)
    assert ran >= 6.0
    assert handler.outcome == "succeeded"
    assert result == 6
    assert handler.lease.extensions >= 3
    assert stolen == []
    assert queue_counts(sqs_client, url) == (0, 0, 0)


class Spawner(Recorded):
    """Starts a grandchild shell loop that ignores SIGTERM, then sleeps (optionally ignoring SIGTERM too)."""

    def run(self):
        if self.kwargs["ignore_term"]:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        shell = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
        Path(self.kwargs["pid_file"]).write_text(f"{os.getpid()} {shell.pid}\n")
        time.sleep(60)


@pytest.mark.parametrize("ignore_term", [False, True], ids=["child-obeys-sigterm", "child-ignores-sigterm"])
def test_the_hard_timeout_kills_grandchildren_and_overshoots_by_at_most_the_grace(ignore_term, tmp_path):
    # Given a task with a grandchild shell loop that ignores SIGTERM
    tm = TaskManager("mem://grandchild")
    tm.submit("Spawner", ignore_term=ignore_term, pid_file=str(tmp_path / "pids"))
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))

    # When its 1 s hard timeout passes (grace 0.5 s)
    with Spawner(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=1, **kwargs) as handler:
        handler.run()
    overshoot = handler.runtime - 1  # the deadline -> the task process reaped

    # Then the child and the grandchild are both gone, within the grace period
    child, grandchild = map(int, (tmp_path / "pids").read_text().split())
    assert handler.outcome == "timed out"
    assert wait_gone(child, grandchild, within=0.5) == []
    assert overshoot < 0.5 + 0.4
    if ignore_term:
        assert overshoot >= 0.5


class Dies(Recorded):
    max_memory_mb = 64

    def run(self):
        how = self.kwargs["how"]
        if how == "raise":
            raise ValueError("bad input 42")
        if how == "segfault":
            segfault()
        if how == "exit":
            os._exit(3)
        if how == "memory":
            return len(bytearray(512 * 1024 * 1024))


@pytest.mark.parametrize("how, error, says", [
    ("raise", TaskFailed, "ValueError: bad input 42"),
    ("segfault", TaskCrashed, "killed by SIGSEGV"),
    ("exit", TaskCrashed, "exited with code 3"),
    ("memory", MemoryCapExceeded, "memory cap of 64 MiB"),
])
def test_every_way_a_task_dies_is_reported_with_its_cause_and_the_message_is_retried(
        how, error, says, make_queue, sqs_client):
    # Given a task that dies in a given way
    url = make_queue()
    TaskManager(url).submit("Dies", how=how)
    kwargs, message = receive_one(url, sqs_timeout=30)

    # When it runs in process isolation
    with Dies(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=30, **kwargs) as handler:
        handler.run()

    # Then notify got the cause, and the message was handed back, not deleted
    (reported,) = handler.notified
    assert handler.outcome == "failed"
    assert type(reported) is error
    assert says in str(reported)
    again = sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=3, MessageSystemAttributeNames=["All"])
    assert again["Messages"][0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_crash_without_a_memory_cap_names_the_signal():
    class Segfault(Recorded):
        def run(self):
            segfault()

    tm = TaskManager("mem://segfault")
    tm.submit("Segfault")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with Segfault(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        handler.run()
    (reported,) = handler.notified
    assert type(reported) is TaskCrashed
    assert reported.signal == "SIGSEGV"


def test_the_child_traceback_and_the_return_value_come_back():
    class Answer(Recorded):
        def run(self):
            if self.kwargs["fail"]:
                raise KeyError("missing")
            return {"answer": 42, "pid": os.getpid()}

    tm = TaskManager("mem://answer")
    tm.submit("Answer", fail=False)
    tm.submit("Answer", fail=True)
    received = tm.task_generator(wait_time=0, sqs_timeout=30)
    results = []
    for _, kwargs, message in (next(received), next(received)):
        with Answer(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
            results.append(handler.run())
        if kwargs["fail"]:
            failure = handler.exception
    assert {"answer": 42} == {k: v for k, v in results[0].items() if k == "answer"}
    assert results[0]["pid"] != os.getpid()
    assert isinstance(failure, TaskFailed)
    assert failure.type_name == "KeyError"
    assert "in run" in failure.remote_traceback and "raise KeyError" in failure.remote_traceback
    assert isinstance(failure.original, KeyError)


WORKER_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from sqsmaster import MessageHandler, TaskManager

    class Busy(MessageHandler):
        isolation = "process"

        def run(self):
            shell = subprocess.Popen(["sh", "-c", "while :; do sleep 0.1; done"])
            with open(sys.argv[1], "w") as out:
                out.write(f"{os.getpid()} {shell.pid}\\n")
            sum(range(10**13))

    tm = TaskManager("mem://worker")
    tm.submit("Busy")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with Busy(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=120, **kwargs) as handler:
        handler.run()
""")


def test_sigkill_of_the_worker_leaves_no_task_process_running(tmp_path):
    # Given a worker process whose task (and its grandchild) are running
    pid_file = tmp_path / "pids"
    worker = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(pid_file)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child, grandchild = map(int, wait_for_file(pid_file).split())
        assert alive(child) and alive(grandchild)

        # When the worker is SIGKILLed
        worker.kill()
        worker.wait(5)

        # Then neither the task process nor its grandchild keeps running
        assert wait_gone(child, grandchild, within=3) == []
    finally:
        worker.kill()
        worker.wait(5)


class Stubborn(Recorded):
    """Ignores SIGTERM, and so does the grandchild it starts: only SIGKILL, after the grace, stops them."""

    kill_grace = 5.0

    def run(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        shell = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
        Path(self.kwargs["pid_file"]).write_text(f"{os.getpid()} {shell.pid}\n")
        time.sleep(60)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_stubborn(tmp_path: Path, name: str) -> tuple[Stubborn, TaskManager]:
    tm = TaskManager(f"mem://{name}")
    tm.submit("Stubborn", pid_file=str(tmp_path / "pids"))
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    return Stubborn(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.5, **kwargs), tm


def test_a_second_ctrl_c_during_the_kill_grace_leaves_no_task_process_and_no_open_descriptor(tmp_path):
    # Given a task (and its grandchild) that ignore SIGTERM, past its 0.5 s hard timeout, in its 5 s
    # kill grace; warmed up once, so the descriptor count below is the steady one
    warm, _ = run_stubborn(tmp_path, "warm-up")
    with warm:
        warm.run()
    before = open_fds()
    handler, tm = run_stubborn(tmp_path, "second-ctrl-c")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # 0.5 s into the grace

    # When Ctrl-C comes
    started = time.monotonic()
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with handler:
                handler.run()
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, previous)
    elapsed = time.monotonic() - started

    # Then it cut the grace short, and neither the task process nor its grandchild survived the with
    # block (SIGKILLed and reaped first); every descriptor was closed; the message was released now
    child, grandchild = map(int, (tmp_path / "pids").read_text().split())
    assert elapsed < 0.5 + 5.0
    assert not alive(child)
    assert wait_gone(grandchild, within=1.0) == []
    assert open_fds() == before
    assert handler.outcome == "interrupted"
    assert tm.attributes()["ApproximateNumberOfMessages"] == "1"


def test_a_second_shutdown_signal_during_the_kill_grace_leaves_no_task_process(tmp_path):
    from sqsmaster.worker.signals import ShutdownSignals, WorkerShutdown

    # Given the worker's signal handling around a task that ignores SIGTERM, past its hard timeout
    handler, _ = run_stubborn(tmp_path, "second-sigterm")
    first = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    second = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))  # in the kill grace

    # When a second SIGTERM comes during the kill grace
    with ShutdownSignals(grace=None) as signals:
        first.start()
        second.start()
        try:
            with pytest.raises(WorkerShutdown):
                with handler:
                    signals.interruptible = True
                    handler.run()
        finally:
            first.cancel()
            second.cancel()

    # Then the task process and its grandchild are gone before WorkerShutdown left the with block
    child, grandchild = map(int, (tmp_path / "pids").read_text().split())
    assert not alive(child)
    assert wait_gone(grandchild, within=1.0) == []


def test_a_task_that_swallows_every_exception_forever_is_still_stopped_on_time():
    # Given a task that catches everything, a timeout included, in an endless loop (signal isolation
    # cannot stop such a task: each interrupt is swallowed; SIGTERM to its process can)
    class SwallowsEverything(Recorded):
        def run(self):
            while True:
                try:
                    time.sleep(0.05)
                except:  # noqa: E722
                    pass

    tm = TaskManager("mem://swallows")
    tm.submit("SwallowsEverything")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with SwallowsEverything(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.5, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "timed out"
    assert handler.runtime < 0.5 + 0.7  # SIGTERM ends it at once; margin for a loaded machine


class Unloadable(Exception):
    """Pickles in the task process, but its unpickling fails (pickle calls ``Unloadable(*args)``, one arg short)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.detail = detail


def test_a_task_whose_return_value_cannot_be_unpickled_still_succeeded_and_its_message_is_deleted():
    class Returns(Recorded):
        def run(self):
            return Unloadable("E42", "returned, not raised")

    tm = TaskManager("mem://unloadable")
    tm.submit("Returns")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    value: object = "run() raised"
    with Returns(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        value = handler.run()
    # The task ran to its end: its value (which a worker discards) is lost, not the success
    assert value is None
    assert (handler.outcome, handler.notified) == ("succeeded", [])
    assert tm.attributes()["ApproximateNumberOfMessages"] == "0"
    assert tm.attributes()["ApproximateNumberOfMessagesNotVisible"] == "0"
