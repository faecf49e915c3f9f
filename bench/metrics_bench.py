"""What ``--metrics`` costs: the observer's CPU per attempt, and a scrape's time as processes add files.

    python bench/metrics_bench.py [--attempts 20000] [--processes 1 8 32]

Per attempt, a worker process tells its metrics observer of the start, ``--beats`` heartbeat ticks
(each a count and a lag sample) and the end: that is the CPU the metrics add to each task, on top
of a task's own (milliseconds at the least, hours at the most). A scrape adds up one file per
metric type per process that ever ran (pool children replaced after a crash included): its time
is measured with 1, 8 and 32 processes' files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqsmaster.worker.events import AttemptStart  # noqa: E402
from sqsmaster.worker.exporter import MetricsExporter  # noqa: E402
from sqsmaster.worker.jobs import JobRecord  # noqa: E402
from sqsmaster.worker.metrics import MetricsObserver  # noqa: E402
from sqsmaster.worker.worklog import AttemptRecord  # noqa: E402

QUEUE = "sqlite:///{dir}/bench.db?queue=bench"


def observer_cpu(attempts: int, beats: int) -> float:
    """CPU seconds per attempt spent in the observer."""
    observer = MetricsObserver(["solve"])
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/bench"
    began = time.process_time()
    for n in range(attempts):
        now = time.time()
        start = AttemptStart(f"m{n}", url, "solve", 1, {}, now, now + 60, 30, "signal", now - 1)
        observer.attempt_started(start)
        for beat in range(beats):
            observer.heartbeat(start, now, beat + 1)
            observer.heartbeat_lag(start, 0.002)
        job = JobRecord(f"m{n}", "solve", 1, "host", 1, now - 1, now, now + 1, 1.0, "succeeded")
        observer.attempt_ended(AttemptRecord(f"m{n}", url, "solve", 1, "succeeded", "deleted", now, 1.0, job=job))
    spent = time.process_time() - began
    observer.close(1)
    return spent / attempts


def scrape_time(processes: int, directory: str) -> float:
    """Seconds one scrape takes with ``processes`` processes' files (each wrote every metric once)."""
    exporter = MetricsExporter(("127.0.0.1", 0), [QUEUE.format(dir=directory)], processes, period=3600)
    exporter.start()
    try:
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:
                observer_cpu(1, 1)
                os._exit(0)
            os.waitpid(pid, 0)
        urllib.request.urlopen(exporter.url).read()  # warm
        began = time.perf_counter()
        for _ in range(20):
            urllib.request.urlopen(exporter.url).read()
        return (time.perf_counter() - began) / 20
    finally:
        exporter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=20000)
    parser.add_argument("--beats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        from sqsmaster import TaskManager

        TaskManager(QUEUE.format(dir=directory)).submit("solve")  # makes the queue the sampler reads
        exporter = MetricsExporter(("127.0.0.1", 0), [QUEUE.format(dir=directory)], 1, period=3600)
        exporter.start()  # the directory the observer writes to
        try:
            cost = observer_cpu(args.attempts, args.beats)
        finally:
            exporter.close()
        print(f"observer CPU per attempt ({args.beats} heartbeats): {cost * 1e6:.1f} µs "
              f"over {args.attempts} attempts")
        for processes in args.processes:
            print(f"scrape with {processes:>2} processes' files: {scrape_time(processes, directory) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
