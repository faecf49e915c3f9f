"""Local parallel map benchmark: the overhead per item of sqsmaster.map against multiprocessing.Pool and ezpq.

    python bench/map_bench.py                  # 10,000 items each, ezpq 1,000 (about 8 minutes on 2 cores)
    python bench/map_bench.py --items 500      # a smoke run

ezpq runs on the first ``--ezpq-items`` items only (default 1,000): its scheduler slows down as its
queue grows, and 10,000 items did not finish in 25 minutes on a busy 2-core machine.

The function is trivial (``abs``), so the time per item is the machinery's own cost: wall
time per item, and the CPU per item of the parent and of all its children together. What each
contender does per item differs, which is the point of the table:

- ``multiprocessing.Pool.map`` (chunksize 1 and its default): long-lived workers, items
  pickled in batches; no timeout can stop a call, a crashed worker hangs the map.
- ``sqsmaster.map``: a fork per call (the call's own process group and a watchdog), a hard
  timeout that kills even C code, a memory cap, a result record per item.
- ``ezpq.Queue.map``: a ``multiprocessing.Process`` per job, scheduled by a thread that
  wakes every ``poll`` seconds (0.1 by default; run here with 0.01 too).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqsmaster  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(run: Callable[[list[int]], list[Any]], items: list[int]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``run(items)``; checks it returned every result in order."""
    cpu, started = cpu_seconds(), time.perf_counter()
    values = run(items)
    wall = time.perf_counter() - started
    assert list(values) == [abs(x) for x in items], "wrong or missing results"
    return wall, cpu_seconds() - cpu


def pool_map(processes: int, chunksize: int | None) -> Callable[[list[int]], list[Any]]:
    def run(items: list[int]) -> list[Any]:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            return pool.map(abs, items, chunksize=chunksize)
    return run


def sqsmaster_map(processes: int) -> Callable[[list[int]], list[Any]]:
    def run(items: list[int]) -> list[Any]:
        return [r.result() for r in sqsmaster.map(abs, items, processes=processes, hard_timeout=60)]
    return run


def ezpq_map(processes: int, poll: float) -> Callable[[list[int]], list[Any]] | None:
    try:
        import ezpq
    except ImportError:
        return None

    def run(items: list[int]) -> list[Any]:
        with ezpq.Queue(processes, poll=poll) as queue:
            jobs = queue.map(abs, items)
        return [job["output"] for job in sorted(jobs, key=lambda job: job["id"])]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--ezpq-items", type=int, default=1_000)
    args = parser.parse_args()
    items = [-n for n in range(args.items)]
    few = items[:args.ezpq_items]
    contenders: list[tuple[str, Callable[[list[int]], list[Any]] | None, list[int]]] = [
        ("multiprocessing.Pool.map, chunksize=1", pool_map(args.processes, 1), items),
        ("multiprocessing.Pool.map, default chunks", pool_map(args.processes, None), items),
        ("sqsmaster.map (fork per call, hard timeout)", sqsmaster_map(args.processes), items),
        (f"ezpq.Queue.map, poll=0.1 (default), {len(few):,}", ezpq_map(args.processes, 0.1), few),
        (f"ezpq.Queue.map, poll=0.01, {len(few):,}", ezpq_map(args.processes, 0.01), few),
    ]
    print(f"{args.items:,} items of abs(), {args.processes} processes, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'contender':46} {'wall s':>8} {'ms/item':>8} {'CPU ms/item':>12}")
    for name, run, chosen in contenders:
        if run is None:
            print(f"{name:46} {'not installed (pip install -r bench/requirements.txt)':>30}")
            continue
        wall, cpu = measure(run, chosen)
        print(f"{name:46} {wall:8.2f} {wall / len(chosen) * 1000:8.3f} {cpu / len(chosen) * 1000:12.3f}", flush=True)


if __name__ == "__main__":
    main()
