"""What the job store costs a worker per task: client CPU and wall time, no store vs sqlite:// (vs dynamodb://).

Each run submits N trivial tasks to a fresh queue on an embedded moto SQS server (127.0.0.1),
then runs ``sqsmaster worker QUEUE --until-empty`` over them in a subprocess, with or without
``--store``, and measures the worker process's CPU (user + system, from ``wait4``) and its
wall time. Runs are interleaved (none, sqlite, [dynamodb], none, ...) so a busy machine's
noise falls on every mode alike; the table gives the median of the repeats, per task, and
the overhead against no store. The dynamodb:// store is measured when it is installed (its
table on the same moto server).

    python bench/store_bench.py [--tasks 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqsmaster import TaskManager  # noqa: E402
from sqsmaster.ops.embedded import EmbeddedSQS  # noqa: E402


def store_urls(endpoint: str, directory: str) -> dict[str, str | None]:
    """The stores to measure: none, sqlite, and dynamodb when that store is installed."""
    from sqsmaster.errors import ConfigurationError
    from sqsmaster.store import open_store

    urls: dict[str, str | None] = {"none": None, "sqlite": f"sqlite:///{directory}/jobs-{{run}}.db"}
    try:
        open_store(f"dynamodb://probe-{uuid.uuid4().hex[:8]}?endpoint={endpoint}&region=us-east-1").close()
        urls["dynamodb"] = f"dynamodb://jobs-{{run}}?endpoint={endpoint}&region=us-east-1"
    except ConfigurationError:
        print("dynamodb:// is not installed on this branch: measuring none and sqlite only\n")
    return urls


def one_run(server: EmbeddedSQS, tasks: int, store: str | None) -> tuple[float, float]:
    """(worker CPU seconds, worker wall seconds) for ``tasks`` no-op tasks."""
    url = server.create_queue(f"bench-{uuid.uuid4().hex[:10]}", visibility_timeout=30)
    TaskManager(url).submit_many(("noop", {"i": i}) for i in range(tasks))
    command = [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", "bench.worker_tasks", "--until-empty",
               "--wait-time", "1", "--log-level", "WARNING"]
    if store is not None:
        command += ["--store", store.format(run=uuid.uuid4().hex[:8])]
    began = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"worker exited {process.returncode} ({store or 'no store'})")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with EmbeddedSQS() as server, tempfile.TemporaryDirectory() as directory:
        urls = store_urls(server.endpoint, directory)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        for _ in range(args.repeats):
            for name, url in urls.items():
                results[name].append(one_run(server, args.tasks, url))
    print(f"{args.tasks} no-op tasks per run, one worker process, moto SQS on 127.0.0.1; median of "
          f"{args.repeats} runs; per task, in milliseconds")
    print(f"{'store':<10} {'CPU/task':>9} {'wall/task':>10} {'CPU overhead':>13} {'wall overhead':>14}")
    base_cpu = statistics.median(cpu for cpu, _ in results["none"]) / args.tasks * 1000
    base_wall = statistics.median(wall for _, wall in results["none"]) / args.tasks * 1000
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs) / args.tasks * 1000
        wall = statistics.median(w for _, w in runs) / args.tasks * 1000
        print(f"{name:<10} {cpu:>9.2f} {wall:>10.2f} {cpu - base_cpu:>+13.2f} {wall - base_wall:>+14.2f}")


if __name__ == "__main__":
    main()
