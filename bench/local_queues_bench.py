"""Durable local queues: submit and drain no-op tasks on sqlite:// and fq:// vs python-task-queue's fq://.

    pip install -r bench/requirements.txt
    python bench/local_queues_bench.py [--messages 20000] [--single-messages 2000] [--no-peer]

All queues live in one fresh temporary directory on the same disk, at the same depth.
Reports messages per second and client CPU per message for
  * submit: one message per call (TaskManager.submit / TaskQueue.insert of one task),
    batches of 10 (send_batch, SQS's limit), and bulk (send_many of a generator /
    task-queue's TaskQueue.insert of a generator),
  * drain by one consumer: receive 10, decode, run a no-op, delete each,
  * drain by 2 competing consumer processes: duplicates and losses (both must be 0),
    and each consumer's resident memory after 10 % and 100 % of its share (flat memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqsmaster import TaskManager, open_queue  # noqa: E402
from sqsmaster.encoding import decode_task  # noqa: E402
from sqsmaster.producer import build_entry  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def noop(n: int) -> None:
    """The task every queue runs."""


def rss_mb() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * PAGE / 2**20


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to run ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


# -- sqsmaster -------------------------------------------------------------------------------------

def ours_submit_single(url: str, n: int) -> None:
    manager = TaskManager(url)
    for i in range(n):
        manager.submit("noop", n=i)


def ours_submit_batch(url: str, n: int) -> None:
    queue = open_queue(url)
    for start in range(0, n, 10):
        queue.send_batch([build_entry("noop", {"n": i}, {}, entry_id=str(i))
                          for i in range(start, min(start + 10, n))])


def ours_submit_bulk(url: str, n: int) -> None:
    open_queue(url).send_many(build_entry("noop", {"n": i}, {}) for i in range(n))  # type: ignore[attr-defined]


def ours_drain(url: str, seen: list[int] | None = None, memory: list[float] | None = None, total: int = 0) -> int:
    """Receive 10 at a time until the queue reports nothing left; returns how many ran."""
    queue = open_queue(url)
    done = 0
    while True:
        messages = queue.receive(10, wait_time=0, visibility_timeout=300)
        if not messages:
            attributes = queue.get_attributes()
            if all(attributes[a] == "0" for a in ("ApproximateNumberOfMessages",
                                                  "ApproximateNumberOfMessagesNotVisible")):
                return done
            time.sleep(0.05)
            continue
        for message in messages:
            _, kwargs = decode_task(message.body, message.message_id)
            noop(**kwargs)
            message.delete()
            done += 1
            if seen is not None:
                seen.append(kwargs["n"])
            if memory is not None and done == max(total // 20, 1):
                memory.append(rss_mb())


# -- python-task-queue -----------------------------------------------------------------------------

def peer_queue(path: str) -> Any:
    from taskqueue import TaskQueue

    return TaskQueue(f"fq://{path}", n_threads=0, progress=False)


def peer_submit_single(path: str, n: int) -> None:
    from functools import partial

    from taskqueue import queueable

    queueable(noop)
    queue = peer_queue(path)
    for i in range(n):
        queue.insert([partial(noop, i)])


def peer_submit_batch(path: str, n: int) -> None:
    from functools import partial

    from taskqueue import queueable

    queueable(noop)
    peer_queue(path).insert((partial(noop, i) for i in range(n)), total=n)


def peer_drain(path: str, seen: list[int] | None = None, memory: list[float] | None = None, total: int = 0) -> int:
    from taskqueue import QueueEmptyError, queueable

    queueable(noop)
    queue = peer_queue(path)
    done = 0
    while True:
        try:
            tasks = queue.lease(seconds=300, num_tasks=10)
        except QueueEmptyError:
            if queue.enqueued == 0:
                return done
            continue
        for task in tasks:
            task.execute()
            queue.delete(task)
            done += 1
            if seen is not None:
                seen.append(task.args[0] if task.args else -1)
            if memory is not None and done == max(total // 20, 1):
                memory.append(rss_mb())


# -- the run ---------------------------------------------------------------------------------------

def consume_main(kind: str, target: str, out: str, total: int) -> None:
    """One competing consumer (run as a subprocess): drain, then write what it ran and its memory."""
    seen: list[int] = []
    memory: list[float] = []
    drain = ours_drain if kind != "task-queue" else peer_drain
    drain(target, seen, memory, total)
    memory.append(rss_mb())
    Path(out).write_text(json.dumps({"seen": seen, "memory": memory,
                                     "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def competing(kind: str, target: str, n: int, workdir: Path) -> dict[str, Any]:
    label = "".join(c if c.isalnum() else "-" for c in kind)
    outs = [workdir / f"{label}-consumer{i}.json" for i in range(2)]
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, __file__, "--consume", kind, target, str(out), str(n)])
                 for out in outs]
    codes = [p.wait() for p in processes]
    wall = time.perf_counter() - started
    results = [json.loads(out.read_text()) for out in outs]
    seen = [n for r in results for n in r["seen"]]
    return {"codes": codes, "wall": wall, "ran": len(seen), "duplicates": len(seen) - len(set(seen)),
            "losses": len(set(range(n)) - set(seen)), "split": [len(r["seen"]) for r in results],
            "memory": [[round(m, 1) for m in r["memory"]] for r in results]}


def targets(kind: str, workdir: Path, name: str) -> str:
    if kind == "sqlite://":
        return f"sqlite://{workdir}/{name}.db?queue=bench&visibility_timeout=300"
    if kind == "fq://":
        return f"fq://{workdir}/fq-{name}?visibility_timeout=300"
    return str(workdir / f"task-queue-{name}")


def run(n: int, single_n: int, with_peer: bool) -> None:
    kinds = ["sqlite://", "fq://"] + (["task-queue fq://"] if with_peer else [])
    workdir = Path(tempfile.mkdtemp(prefix="sqsmaster-bench-"))
    print(f"{n} no-op messages per run ({single_n} for submit 1/call), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, queues in {workdir}\n")
    rows = []
    for kind in kinds:
        peer = kind.startswith("task-queue")
        single, batch, bulk = (targets(kind, workdir, name) for name in ("single", "batch", "bulk"))
        s_wall, s_cpu = timed(peer_submit_single if peer else ours_submit_single, single, single_n)
        if peer:
            b_wall = b_cpu = float("nan")  # task-queue has no 10-entry batch; its bulk insert is below
            k_wall, k_cpu = timed(peer_submit_batch, bulk, n)
        else:
            b_wall, b_cpu = timed(ours_submit_batch, batch, n)
            k_wall, k_cpu = timed(ours_submit_bulk, bulk, n)
        d_wall, d_cpu = timed(peer_drain if peer else ours_drain, bulk)
        rows.append((kind, single_n / s_wall, 1e6 * s_cpu / single_n, n / b_wall, 1e6 * b_cpu / n,
                     n / k_wall, 1e6 * k_cpu / n, n / d_wall, 1e6 * d_cpu / n))
        print(f"  {kind}: done", file=sys.stderr)
    header = ("queue", "submit 1/call msg/s", "CPU µs/msg", "batch of 10 msg/s", "CPU µs/msg",
              "bulk msg/s", "CPU µs/msg", "drain msg/s", "CPU µs/msg")
    print_table(header, [(r[0], *("-" if v != v else f"{v:,.0f}" for v in r[1:])) for r in rows])
    if with_peer:
        peer_row = rows[-1]
        print("\nspeed-up over task-queue fq:// (wall msg/s, and in brackets client CPU per message):")
        for row in rows[:-1]:
            print(f"  {row[0]:<10} submit 1/call {row[1] / peer_row[1]:.1f}x ({peer_row[2] / row[2]:.1f}x), "
                  f"bulk submit {row[5] / peer_row[5]:.1f}x ({peer_row[6] / row[6]:.1f}x), "
                  f"drain {row[7] / peer_row[7]:.1f}x ({peer_row[8] / row[8]:.1f}x)")
    print(f"\n2 competing consumer processes over {n} messages (receive 10, no-op, delete):")
    crow = []
    for kind in kinds:
        peer = kind.startswith("task-queue")
        target = targets(kind, workdir, "competing")
        (peer_submit_batch if peer else ours_submit_batch)(target, n)
        result = competing("task-queue" if peer else kind, target, n, workdir)
        memory = "; ".join(f"{m[0]} -> {m[-1]}" for m in result["memory"])
        crow.append((kind, f"{n / result['wall']:,.0f}", str(result["ran"]), str(result["duplicates"]),
                     str(result["losses"]), "/".join(map(str, result["split"])), memory))
    print_table(("queue", "msg/s", "ran", "duplicates", "losses", "split", "RSS MB at 5% -> end"), crow)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """An RST simple table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    rule = "  ".join("=" * w for w in widths)
    print(rule)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print(rule)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(rule)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        consume_main(*sys.argv[2:5], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--single-messages", type=int, default=2_000,
                        help="messages for the one-per-call submit (task-queue does ~100/s)")
    parser.add_argument("--no-peer", action="store_true", help="skip python-task-queue (not installed)")
    args = parser.parse_args()
    run(args.messages, args.single_messages, not args.no_peer)


if __name__ == "__main__":
    main()
