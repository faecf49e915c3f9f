"""The sqsmaster benchmark suite: sqsmaster against raw boto3 and the peers, in one run.

    python bench/run.py                  # the full run (about 20 minutes)
    python bench/run.py --quick          # smaller counts, for a smoke test
    python bench/run.py --only sink      # one section (moto, sink, bill, rss); repeatable

Everything talks to 127.0.0.1 only. Sections:

* moto: submit and drain on a moto server process. moto re-scans its queue on every
  call, so its speed falls as the queue grows: submit runs go to a queue a purge
  thread keeps near empty, drain runs start from the same prefill.
* sink: submit to bench/sink.py, a stub SQS endpoint that answers every request
  after 0 or 20 ms (real SQS answers in 10-30 ms), concurrently, keeping nothing: the
  client is the only limit. Rounds interleave the contenders.
* bill: SQS requests per task and per idle minute, counted at the server (bench/bill.py).
* rss: client memory submitting 200,000 and 1,000,000 tasks from a generator to the sink.

Each measurement runs in a process of its own (bench/contenders.py); each figure is
the median of the repeats. Results: Markdown tables on stdout and in
bench/results/results.md, the raw figures in bench/results/results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from contenders import DRAIN, PREFILL, body  # noqa: E402

RESULTS = os.path.join(HERE, "results")
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
RAW_SUBMIT, OURS_SUBMIT = "raw boto3 send_message_batch, 1 thread", "sqsmaster submit_many"
TQ_SUBMIT = "task-queue insert, default 40 threads"
STM_SUBMIT = "sqstaskmaster submit loop"
RAW_THREADS = [f"raw boto3 send_message_batch, {n} thread{'s' if n > 1 else ''}" for n in (1, 4, 16)]
SINK_SUBMIT = [*RAW_THREADS, OURS_SUBMIT, TQ_SUBMIT, STM_SUBMIT]
MOTO_SUBMIT = [RAW_SUBMIT, OURS_SUBMIT, TQ_SUBMIT, "task-queue insert, 1 thread", STM_SUBMIT]
SECTIONS = ["moto", "sink", "bill", "rss"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server process on 127.0.0.1; yields its endpoint."""
    port = free_port()
    # moto >= 5.2.4 allows one PurgeQueue a minute, as SQS does; the depth-keeping purge thread needs more.
    env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def sink_server(delay: float = 0.0) -> Iterator[str]:
    """The stub SQS endpoint (bench/sink.py) answering after ``delay`` s, in a process; yields its endpoint."""
    with tempfile.TemporaryDirectory() as scratch:
        port_file = os.path.join(scratch, "port")
        process = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py"), port_file, "--delay", str(delay)])
        try:
            while not os.path.exists(port_file) or not open(port_file).read():
                time.sleep(0.05)
            yield f"http://127.0.0.1:{open(port_file).read()}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def wait_until_up(endpoint: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the moto server exited at start")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the moto server did not come up")


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def measure(kind: str, name: str, url: str, count: int, endpoint: str) -> dict[str, Any]:
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    done = subprocess.run([sys.executable, os.path.join(HERE, "contenders.py"), kind, name, url, str(count)],
                          env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {name!r} failed: {done.stderr.strip()[-800:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextmanager
def kept_empty(sqs: Any, url: str) -> Iterator[None]:
    """A thread purging the queue every 0.2 s, so every submit run meets the same (near-empty) queue."""
    stop = threading.Event()

    def purge() -> None:
        while not stop.wait(0.2):
            try:
                sqs.purge_queue(QueueUrl=url)
            except Exception:
                pass

    thread = threading.Thread(target=purge, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sqs.purge_queue(QueueUrl=url)


def prefill(sqs: Any, url: str, count: int) -> None:
    for start in range(0, count, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": body(start + i)}
                                                      for i in range(min(10, count - start))])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rate": statistics.median(run["count"] / run["elapsed"] for run in runs),
        "cpu_us_per_message": statistics.median(run["cpu"] / run["count"] * 1e6 for run in runs),
        "maxrss_mib": max(run["maxrss_kb"] for run in runs) / 1024,
        "runs": runs,
    }


def worker_available() -> bool:
    try:
        from sqsmaster import Worker  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def bench_submit(endpoint: str, sqs: Any, counts: dict[str, int], repeats: int, label: str,
                 names: list[str]) -> dict[str, Any]:
    url = sqs.create_queue(QueueName=f"submit-{label}")["QueueUrl"]
    results = {}
    with kept_empty(sqs, url):
        for name in names:
            count = counts.get(name, counts["default"])
            runs = [measure("submit", name, url, count, endpoint) for _ in range(repeats)]
            results[name] = summarize(runs)
            log(f"submit[{label}] {name}: {results[name]['rate']:.0f} msg/s")
    return results


def bench_drain(endpoint: str, sqs: Any, depth: int, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in DRAIN:
        if "Worker" in name and not worker_available():
            results[name] = {"skipped": "sqsmaster.Worker is not importable on this branch yet"}
            continue
        url = sqs.create_queue(QueueName=f"drain-{len(results)}", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        runs = []
        for _ in range(repeats):
            sqs.purge_queue(QueueUrl=url)
            if name in PREFILL:
                measure("prefill", name, url, depth, endpoint)
            else:
                prefill(sqs, url, depth)
            runs.append(measure("drain", name, url, depth, endpoint))
        results[name] = summarize(runs)
        log(f"drain {name}: {results[name]['rate']:.0f} msg/s")
    return results


def bench_sink(delays_ms: list[int], counts: dict[str, int], rounds: int) -> dict[str, Any]:
    """Every submitter against the latency sink, at each delay; rounds interleave the contenders.

    One round runs each contender once, so a burst of load from elsewhere on the machine
    lands on all of them alike rather than on the repeats of one.
    """
    results: dict[str, Any] = {}
    for delay_ms in delays_ms:
        with sink_server(delay_ms / 1000) as sink:
            url = f"{sink}/123456789012/sink"
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SINK_SUBMIT}
            for round_number in range(rounds):
                for name in SINK_SUBMIT:
                    runs[name].append(measure("submit", name, url, counts.get(name, counts["default"]), sink))
                    log(f"sink {delay_ms} ms round {round_number + 1} {name}: "
                        f"{runs[name][-1]['count'] / runs[name][-1]['elapsed']:.0f} msg/s")
            results[str(delay_ms)] = {name: summarize(name_runs) for name, name_runs in runs.items()}
    return results


def bench_rss(counts: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with sink_server() as sink:
        url = f"{sink}/123456789012/sink"
        for name in (OURS_SUBMIT, TQ_SUBMIT):
            results[name] = {}
            for count in counts:
                run = measure("rss", name, url, count, sink)
                results[name][str(count)] = {"maxrss_mib": run["maxrss_kb"] / 1024,
                                             "rate": run["count"] / run["elapsed"],
                                             "cpu_us_per_message": run["cpu"] / run["count"] * 1e6}
                log(f"rss {name} {count}: {run['maxrss_kb'] / 1024:.1f} MiB")
    return results


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test, not a result")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    args = parser.parse_args()
    quick, sections = args.quick, args.only or SECTIONS
    submit_counts = {"default": 600 if quick else 3000, STM_SUBMIT: 200 if quick else 600}
    sink_counts = {"default": 2000 if quick else 10_000, RAW_SUBMIT: 600 if quick else 3000,
                   STM_SUBMIT: 100 if quick else 500}
    depth = 100 if quick else 500
    rss_counts = [20_000, 100_000] if quick else [200_000, 1_000_000]
    os.environ.update(ENV)
    started = time.monotonic()
    results: dict[str, Any] = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}",
                               "python": platform.python_version(), "quick": quick, "repeats": args.repeats,
                               "depth": depth, "counts": {"submit": submit_counts, "sink": sink_counts}}
    if "moto" in sections:
        with moto_server() as endpoint:
            sqs = client(endpoint)
            results["submit"] = bench_submit(endpoint, sqs, submit_counts, args.repeats, "direct", MOTO_SUBMIT)
            results["drain"] = bench_drain(endpoint, sqs, depth, args.repeats)
    if "sink" in sections:
        results["sink"] = bench_sink([0, 20], sink_counts, args.repeats)
    if "bill" in sections:
        from bill import run as bill

        results["bill"] = bill(scale=30, tasks=20 if quick else 100, long_tasks=2 if quick else 3,
                               idle=20 if quick else 60)
    if "rss" in sections:
        results["rss"] = bench_rss(rss_counts)
    results["load_at_end"] = os.getloadavg()
    results["wall_seconds"] = time.monotonic() - started
    from report import write_report

    print(write_report(results, RESULTS))


if __name__ == "__main__":
    main()
