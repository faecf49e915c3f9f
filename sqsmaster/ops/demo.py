"""The demo behind ``make demo``: a mixed workload on the embedded default queue, end to end.

``sqsmaster demo`` makes a ``sqlite://`` queue in a temporary directory (no server;
``--sqs`` uses an embedded moto server instead), submits quick tasks, a task longer
than its visibility timeout, a task stuck in C code past its hard timeout and a task
that keeps failing, and runs ``sqsmaster worker --concurrency 2 --until-empty`` on
them with a progress bar. Then it prints what became of each task from the worker's
job log, and writes the job log, the worker's log and a timeline picture.

The tasks below are registered in :data:`registry`, which the worker process loads
with ``--tasks sqsmaster.ops.demo``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConfigurationError
from ..manager import TaskManager
from ..worker.jobs import JobLog, JobRecord
from ..worker.registry import Registry
from ..worker.retry import fixed
from .progress import progress_bar

#: Visibility the worker holds on a message; it heartbeats every third of it.
SQS_TIMEOUT = 3
#: The stuck task's hard timeout (s).
HARD_TIMEOUT = 2
#: The long task's length: well past its visibility timeout.
LONG_TASK = 8.0
#: Receives before the queue's redrive policy moves a message to the dead-letter queue.
MAX_RECEIVE_COUNT = 2
#: The demo gives up (and fails) after this many seconds.
DEADLINE = 50

registry = Registry()


@registry.task
def resize(image: str, seconds: float) -> None:
    """A quick task."""
    time.sleep(seconds)


@registry.task
def train(seconds: float) -> None:
    """Longer than its visibility timeout: only the heartbeat keeps it from running twice."""
    time.sleep(seconds)


@registry.task(isolation="process", hard_timeout=HARD_TIMEOUT, retry=fixed(0, max_retries=1))
def solve() -> None:
    """Stuck in one C call that holds the GIL: no signal handler runs until it returns (in hours)."""
    sum(range(10**13))


@registry.task(retry=fixed(1, max_retries=1))
def fetch(url: str) -> None:
    """Always fails: retried once after 1 s, then dead-lettered."""
    raise ConnectionError(f"{url} is down")


#: (task, kwargs, what must become of it: the outcome of each attempt).
WORKLOAD: list[tuple[str, dict[str, Any], list[str]]] = [
    ("train", {"seconds": LONG_TASK}, ["succeeded"]),
    ("solve", {}, ["timed out", "dead-lettered"]),
    ("fetch", {"url": "https://example.com/feed"}, ["failed", "dead-lettered"]),
    *[("resize", {"image": f"cat-{n}.png", "seconds": 0.2 + 0.1 * n}, ["succeeded"]) for n in range(5)],
]


@dataclass
class DemoQueue:
    url: str
    dead_letter_url: str
    description: str


def run_demo(sqs: bool = False, out_dir: str | None = None, out: Callable[[str], Any] = print) -> int:
    """Run the demo; returns 0 when every task ended as expected, 1 otherwise (2: moto missing for ``sqs``).

    With ``out_dir``, the job log, the worker's log and the timeline are written there and kept.
    Without, they go to a temporary directory that is removed when every task ended as expected
    (and kept, with its paths printed, when one did not: the worker's log says why).
    """
    if out_dir is not None:
        return _run_demo(sqs, Path(out_dir), out, keep=True)
    directory = Path(tempfile.mkdtemp(prefix="sqsmaster-demo-"))
    code = 1
    try:
        code = _run_demo(sqs, directory, out, keep=False)
    finally:
        if code == 0:
            shutil.rmtree(directory, ignore_errors=True)
    return code


def _run_demo(sqs: bool, out_path: Path, out: Callable[[str], Any], keep: bool) -> int:
    started = time.monotonic()
    out_path.mkdir(parents=True, exist_ok=True)
    job_log = out_path / "jobs.log"
    if job_log.exists():
        job_log.unlink()  # a rerun into the same directory starts a fresh log
    with open_demo_queue(sqs) as queue:
        out(f"queue: {queue.description}")
        with TaskManager(queue.url, sender_name="sqsmaster-demo") as manager:
            ids = [manager.submit(task, **kwargs)["MessageId"] for task, kwargs, _ in WORKLOAD]
        out(f"submitted {len(ids)} tasks; running sqsmaster worker --concurrency 2 --until-empty "
            f"(visibility {SQS_TIMEOUT}s, heartbeat every {SQS_TIMEOUT / 3:g}s)")
        code = _run_worker(queue.url, job_log, out_path / "worker.log", len(ids))
        left, dead = _depth(queue.url), _depth(queue.dead_letter_url)
    records = JobLog(job_log).records() if job_log.exists() else []
    ok = _summarise(records, ids, out) and code == 0 and left == 0 and dead == 2
    out(f"\nqueue now: {left} message(s); dead-letter queue: {dead} (solve and fetch); worker exit code {code}")
    if keep or not ok:
        _draw(records, out_path / "timeline.png", out)
        out(f"job log    {job_log}  (sqsmaster report {job_log} --csv jobs.csv --timeline timeline.png)")
        out(f"worker log {out_path / 'worker.log'}")
    else:
        out("the job log, the worker's log and the timeline were temporary: sqsmaster demo --out DIR keeps them")
    out(f"{'every task ended as expected' if ok else 'SOME TASK DID NOT END AS EXPECTED'}; "
        f"took {time.monotonic() - started:.1f}s")
    return 0 if ok else 1


@contextlib.contextmanager
def open_demo_queue(sqs: bool) -> Iterator[DemoQueue]:
    """The demo's queue and dead-letter queue: ``sqlite://`` in a temporary directory, or an embedded moto server."""
    if sqs:
        from .embedded import EmbeddedSQS

        with EmbeddedSQS() as server:
            dlq = server.create_queue("demo-dead-letters")
            url = server.create_queue("demo", visibility_timeout=SQS_TIMEOUT, dead_letter_url=dlq,
                                      max_receive_count=MAX_RECEIVE_COUNT)
            yield DemoQueue(url, dlq, f"{url} (embedded moto SQS server), dead-letter queue {dlq}")
        return
    with tempfile.TemporaryDirectory(prefix="sqsmaster-queue-") as directory:
        path = f"{directory}/demo.db"
        url = (f"sqlite://{path}?queue=demo&visibility_timeout={SQS_TIMEOUT}"
               f"&max_receive_count={MAX_RECEIVE_COUNT}&dead_letter=demo-dlq")
        yield DemoQueue(url, f"sqlite://{path}?queue=demo-dlq",
                        f"sqlite://{path}?queue=demo (no server), dead-letter queue demo-dlq")


def _run_worker(url: str, job_log: Path, worker_log: Path, total: int) -> int:
    """Run ``sqsmaster worker`` in a process of its own; show progress from its job log; its exit code."""
    command = [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", __name__, "--concurrency", "2",
               "--until-empty", "--sqs-timeout", str(SQS_TIMEOUT), "--wait-time", "1", "--grace", "3",
               "--job-log", str(job_log)]
    package_root = str(Path(__file__).resolve().parent.parent)  # runs from a checkout too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    deadline = time.monotonic() + DEADLINE
    with open(worker_log, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        bar = progress_bar(total, "tasks done")
        try:
            while process.poll() is None and time.monotonic() < deadline:
                bar.update_to(len(_finished(job_log)))
                time.sleep(0.2)
            bar.update_to(len(_finished(job_log)))
        finally:
            bar.close()
            if process.poll() is None:
                process.terminate()  # graceful: unstarted messages released, the running task gets --grace
                process.wait()
    return process.returncode if time.monotonic() < deadline else 1


def _finished(job_log: Path) -> set[str | None]:
    """Message ids whose last attempt so far ended them: succeeded or dead-lettered."""
    try:
        return {r.message_id for r in JobLog(job_log).read() if r.outcome in ("succeeded", "dead-lettered")}
    except FileNotFoundError:
        return set()


def _depth(url: str) -> int:
    with TaskManager(url) as manager:
        attributes = manager.attributes()
    return sum(int(attributes.get(name, 0)) for name in ("ApproximateNumberOfMessages",
                                                         "ApproximateNumberOfMessagesNotVisible",
                                                         "ApproximateNumberOfMessagesDelayed"))


def _summarise(records: list[JobRecord], ids: list[str], out: Callable[[str], Any]) -> bool:
    """Print one row per task from the job log, and what it shows; True when each ended as expected."""
    ok = True
    out(f"\n{'task':<8} {'attempts':>8}  {'outcome':<30} {'runtime s':<12} heartbeats")
    for message_id, (task, _, expected) in zip(ids, WORKLOAD):
        attempts = sorted((r for r in records if r.message_id == message_id), key=lambda r: r.attempt)
        outcomes = [r.outcome for r in attempts]
        runtimes = " + ".join(f"{r.runtime:.1f}" for r in attempts) or "-"
        heartbeats = sum(r.heartbeats or 0 for r in attempts)
        mark = "" if outcomes == expected else f"   expected {' -> '.join(expected)}"
        out(f"{task:<8} {len(attempts):>8}  {' -> '.join(outcomes) or '(not run)':<30} {runtimes:<12} "
            f"{heartbeats:>10}{mark}")
        ok = ok and outcomes == expected and _on_time(task, attempts)
    out("")
    for line in _promises(records, ids):
        out(line)
    return ok


def _on_time(task: str, attempts: list[JobRecord]) -> bool:
    if task == "train":  # outlived its visibility timeout, in one attempt, kept by heartbeats
        return all(r.runtime > 2 * SQS_TIMEOUT and (r.heartbeats or 0) >= 2 for r in attempts)
    if task == "solve":  # stopped at its hard timeout, not when the C call returned
        return all(r.runtime < HARD_TIMEOUT + 2 for r in attempts)
    return True


def _promises(records: list[JobRecord], ids: list[str]) -> Iterator[str]:
    by_task: dict[str, list[JobRecord]] = {}
    for message_id, (task, _, _) in zip(ids, WORKLOAD):
        by_task.setdefault(task, []).extend(r for r in records if r.message_id == message_id)
    train, solve, fetch = by_task.get("train", []), by_task.get("solve", []), by_task.get("fetch", [])
    if train:
        yield (f"- train ran {train[-1].runtime:.1f}s, past its {SQS_TIMEOUT}s visibility timeout: "
               f"{train[-1].heartbeats} heartbeats kept it hidden, so no other worker ran it ({len(train)} attempt)")
    if solve:
        yield (f"- solve sat in sum(range(10**13)) holding the GIL; process isolation stopped it at its "
               f"{HARD_TIMEOUT}s hard timeout ({', '.join(f'{r.runtime:.1f}s' for r in solve)}), "
               f"and after its retry it went to the dead-letter queue")
    if fetch:
        yield (f"- fetch failed ({fetch[0].exception}), was retried after 1s, failed again and went to "
               "the dead-letter queue")


def _draw(records: list[JobRecord], path: Path, out: Callable[[str], Any]) -> None:
    from .report import draw_timeline

    if not records:
        return
    try:
        draw_timeline(records, path, title=f"sqsmaster demo: {len(records)} attempts, worker concurrency 2")
    except ConfigurationError as exc:
        out(f"timeline   skipped: {exc}")
        return
    out(f"timeline   {path}")

