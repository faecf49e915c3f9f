"""Supervisor benchmark: how late a hard timeout stops a task, and what process isolation costs per task.

    python bench/supervisor_bench.py            # about 6 minutes; 127.0.0.1 only
    python bench/supervisor_bench.py --quick    # a smoke run (3 runs each, no moto)

1. Hard-timeout overshoot (deadline -> task gone: the ``with`` block has exited and,
   in process isolation, the task process is reaped), p50 and max over the runs, for
   a pure-Python loop and a GIL-holding C call (``sum(range(n))``), under sqsmaster
   (signal and process isolation) and sqstaskmaster 0.0.11. sqstaskmaster cannot stop
   the C call: its C call is sized to end about ``--c-late`` seconds past the deadline,
   so its row says how late it was (the whole C call), not when it would have stopped.
2. The same on SQS over HTTP (a moto server process), with the endpoint answering and
   with it frozen (SIGSTOP, as a network partition looks to a client) half a second into
   the task, before its first heartbeat. sqstaskmaster's heartbeat then waits in its
   SIGALRM handler for botocore's timeouts and retries; the server is thawed after
   ``--thaw-after`` seconds so its rows end at all.
3. Per-task overhead: no-op tasks per second and client CPU per task, signal vs process,
   on LocalQueue (``mem://``, the supervisor's own cost) and on moto over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqsmaster import MessageHandler, TaskManager  # noqa: E402

HUGE = 10**13


def python_loop(n: int) -> None:
    x = 0
    while True:
        x += 1


def c_call(n: int) -> int:
    return sum(range(n))


def calibrate(seconds: float) -> int:
    """``n`` such that ``sum(range(n))`` takes about ``seconds`` (fastest of 3 samples)."""
    n, fastest = 10**7, float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(n))
        fastest = min(fastest, time.perf_counter() - started)
    return int(n * seconds / fastest)


class SignalTask(MessageHandler):
    def run(self) -> Any:
        return self.kwargs["fn"](self.kwargs["n"])


class ProcessTask(SignalTask):
    isolation = "process"
    kill_grace = 5.0


_counter = [0]


def receive(url_prefix: str = "mem://bench") -> tuple[TaskManager, Any]:
    _counter[0] += 1
    tm = TaskManager(f"{url_prefix}-{_counter[0]}")
    tm.submit("Bench")
    _, _, message = next(tm.task_generator(wait_time=0, sqs_timeout=60))
    return tm, message


def overshoot_sqsmaster(handler: type, fn: Callable, n: int, hard_timeout: float) -> float:
    _, message = receive()
    started = time.monotonic()
    with handler(message, sqs_timeout=60, alarm_timeout=30, hard_timeout=hard_timeout, fn=fn, n=n) as h:
        h.run()
    assert h.outcome == "timed out", h.outcome
    return time.monotonic() - started - hard_timeout


def old_handler(fn: Callable, n: int) -> type:
    """A sqstaskmaster 0.0.11 handler running ``fn(n)``."""
    from sqstaskmaster.message_handler import MessageHandler as OldHandler

    class Old(OldHandler):
        def run(self) -> Any:
            return fn(n)

        def running(self) -> bool:
            return True

        def notify(self, exception: BaseException, context: Any = None) -> None:
            pass

    return Old


def overshoot_sqstaskmaster(fn: Callable, n: int, hard_timeout: int) -> float:
    _, message = receive()
    started = time.monotonic()
    with old_handler(fn, n)(message, sqs_timeout=60, alarm_timeout=1, hard_timeout=hard_timeout) as h:
        h.run()
    return time.monotonic() - started - hard_timeout


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:9.0f} {max(samples) * 1000:9.0f}"


def overshoot_rows(runs: int, hard: float, c_late: float, old_c_runs: int) -> list[str]:
    rows = []
    cases: list[tuple[str, str, Callable[[], float], int]] = [
        ("sqsmaster signal", "Python loop", lambda: overshoot_sqsmaster(SignalTask, python_loop, 0, hard), runs),
        ("sqsmaster process", "C call", lambda: overshoot_sqsmaster(ProcessTask, c_call, HUGE, hard), runs),
        ("sqsmaster process", "Python loop", lambda: overshoot_sqsmaster(ProcessTask, python_loop, 0, hard), runs),
        ("sqstaskmaster", "Python loop", lambda: overshoot_sqstaskmaster(python_loop, 0, 1), runs),
    ]
    try:
        import sqstaskmaster  # noqa: F401
    except ImportError:
        print("sqstaskmaster is not installed (pip install -r bench/requirements.txt): its rows are skipped")
        cases = cases[:3]
    else:
        n_late = calibrate(1 + c_late)  # the C call starts at t=0, the deadline is t=1
        cases.append(("sqstaskmaster", f"C call ({1 + c_late:.0f} s)",
                      lambda: overshoot_sqstaskmaster(c_call, n_late, 1), old_c_runs))
    for supervisor, task, measure, count in cases:
        if not count:
            continue
        samples = [measure() for _ in range(count)]
        rows.append(f"{supervisor:<19} {task:<13} {count:>4} {summary(samples)}")
        print(rows[-1], flush=True)
    return rows


#: The SQS-over-HTTP overshoot runs: hard timeout, heartbeat period, visibility (s), and when the endpoint freezes.
NET_HARD, NET_ALARM, NET_VISIBILITY, FREEZE_AT = 2.0, 1.0, 4, 0.5


class MotoProcess:
    """moto's server in a process of its own, so it can be frozen (SIGSTOP) like a network partition."""

    def __enter__(self) -> "MotoProcess":
        for variable, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                                ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(variable, value)  # moto checks none; boto3 wants some to sign with
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        self.client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")
        return self

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def __exit__(self, *exc_info: Any) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


def network_overshoot(moto: MotoProcess, who: str, frozen: bool, thaw_after: float) -> float:
    """One run on a fresh queue: seconds from the hard timeout to the end of the with block."""
    url = moto.client.create_queue(QueueName=f"overshoot-{uuid.uuid4().hex[:8]}",
                                   Attributes={"VisibilityTimeout": str(NET_VISIBILITY)})["QueueUrl"]
    TaskManager(url).submit("Bench")
    if who == "sqstaskmaster":
        import boto3

        queue = boto3.resource("sqs", endpoint_url=moto.endpoint, region_name="us-east-1").Queue(url)
        (message,) = queue.receive_messages(AttributeNames=["All"], WaitTimeSeconds=1)
        handler = old_handler(python_loop, 0)(message, sqs_timeout=NET_VISIBILITY, alarm_timeout=int(NET_ALARM),
                                              hard_timeout=int(NET_HARD))
    else:
        _, _, message = next(TaskManager(url).task_generator(wait_time=1, sqs_timeout=NET_VISIBILITY))
        kind, fn, n = (ProcessTask, c_call, HUGE) if who == "sqsmaster process" else (SignalTask, python_loop, 0)
        handler = kind(message, sqs_timeout=NET_VISIBILITY, alarm_timeout=NET_ALARM, hard_timeout=NET_HARD, fn=fn, n=n)
    timers = [threading.Timer(FREEZE_AT, moto.signal, (signal.SIGSTOP,)),
              threading.Timer(thaw_after, moto.signal, (signal.SIGCONT,))] if frozen else []
    started = time.monotonic()
    for timer in timers:
        timer.start()
    try:
        with handler:
            handler.run()
        return time.monotonic() - started - NET_HARD
    finally:
        for timer in timers:
            timer.cancel()
        moto.signal(signal.SIGCONT)


def network_rows(runs: int, old_frozen_runs: int, thaw_after: float) -> list[str]:
    rows = []
    who = ["sqsmaster signal", "sqsmaster process"]
    try:
        import sqstaskmaster  # noqa: F401
    except ImportError:
        print("sqstaskmaster is not installed (pip install -r bench/requirements.txt): its rows are skipped")
    else:
        who.append("sqstaskmaster")
    tasks = {"sqsmaster signal": "Python loop", "sqsmaster process": "C call", "sqstaskmaster": "Python loop"}
    with MotoProcess() as moto:
        for frozen in (False, True):
            for name in who:
                count = old_frozen_runs if frozen and name == "sqstaskmaster" else runs
                if not count:
                    continue
                samples = [network_overshoot(moto, name, frozen, thaw_after) for _ in range(count)]
                endpoint = f"frozen (thawed at {thaw_after:.0f} s)" if frozen and name == "sqstaskmaster" else (
                    "frozen" if frozen else "answering")
                rows.append(f"{name:<19} {tasks[name]:<13} {endpoint:<24} {count:>4} {summary(samples)}")
                print(rows[-1], flush=True)
    return rows


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def throughput(handler: type, url: str, count: int) -> tuple[float, float]:
    """(no-op tasks per second, client CPU ms per task) for ``count`` tasks on ``url``."""
    tm = TaskManager(url)
    for _ in range(count):
        tm.submit("Noop")
    received = tm.task_generator(wait_time=0, sqs_timeout=60, max_messages=10)
    cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(count):
        _, _, message = next(received)
        with handler(message, sqs_timeout=60, alarm_timeout=30, fn=lambda n: None, n=0) as h:
            h.run()
        assert h.outcome == "succeeded", h.outcome
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    tm.close()
    return count / elapsed, cpu / count * 1000


def throughput_rows(count: int, moto_count: int) -> list[str]:
    rows = []
    targets = [("mem://", lambda i: f"mem://noop-{i}", count)]
    server = None
    if moto_count:
        from sqsmaster.ops.embedded import EmbeddedSQS

        server = EmbeddedSQS().start()
        targets.append(("moto HTTP", lambda i: server.create_queue(f"noop-{i}"), moto_count))
    try:
        for i, (backend, make_url, n) in enumerate(targets):
            for j, (name, handler) in enumerate((("signal", SignalTask), ("process", ProcessTask))):
                rate, cpu = throughput(handler, make_url(i * 2 + j), n)
                rows.append(f"{backend:<10} {name:<8} {n:>5} {rate:10.0f} {cpu:10.2f}")
                print(rows[-1], flush=True)
    finally:
        if server is not None:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per overshoot row (default 20)")
    parser.add_argument("--hard-timeout", type=float, default=0.5, help="sqsmaster's hard timeout (s)")
    parser.add_argument("--c-late", type=float, default=3.0,
                        help="sqstaskmaster's C call ends this many seconds past its 1 s deadline")
    parser.add_argument("--old-c-runs", type=int, default=5, help="runs of sqstaskmaster's C call (each ~4 s)")
    parser.add_argument("--net-runs", type=int, default=10, help="runs per SQS-over-HTTP overshoot row (0: skip)")
    parser.add_argument("--old-frozen-runs", type=int, default=3, help="runs of sqstaskmaster on a frozen endpoint")
    parser.add_argument("--thaw-after", type=float, default=30.0,
                        help="a frozen endpoint answers again after this many seconds (for sqstaskmaster's rows)")
    parser.add_argument("--tasks", type=int, default=500, help="no-op tasks per mode on mem://")
    parser.add_argument("--moto-tasks", type=int, default=100, help="no-op tasks per mode on moto (0: skip)")
    parser.add_argument("--quick", action="store_true", help="3 runs each, 50 no-op tasks, no moto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # every run fails on purpose: keep the table readable
    if args.quick:
        args.runs, args.old_c_runs, args.tasks, args.moto_tasks, args.net_runs = 3, 1, 50, 0, 0
    started = time.monotonic()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"\nHard-timeout overshoot, deadline -> task gone (sqsmaster hard_timeout={args.hard_timeout}s, "
          f"kill_grace=5s; sqstaskmaster hard_timeout=1, alarm_timeout=1)")
    print(f"{'supervisor':<19} {'task':<13} {'runs':>4} {'p50 ms':>9} {'max ms':>9}")
    overshoot_rows(args.runs, args.hard_timeout, args.c_late, args.old_c_runs)
    if args.net_runs:
        print(f"\nHard-timeout overshoot on SQS over HTTP (a moto server process; hard_timeout={NET_HARD:.0f}s, "
              f"heartbeat every {NET_ALARM:.0f}s, visibility {NET_VISIBILITY}s, kill_grace=5s; frozen: SIGSTOP "
              f"{FREEZE_AT}s into the task)")
        print(f"{'supervisor':<19} {'task':<13} {'endpoint':<24} {'runs':>4} {'p50 ms':>9} {'max ms':>9}")
        network_rows(args.net_runs, args.old_frozen_runs, args.thaw_after)
    print("\nPer-task overhead, no-op tasks (receive, supervise, delete)")
    print(f"{'backend':<10} {'mode':<8} {'tasks':>5} {'tasks/s':>10} {'CPU ms/task':>10}")
    throughput_rows(args.tasks, args.moto_tasks)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end; took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
