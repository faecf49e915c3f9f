"""The dashboard at 20,000 jobs: how long each page takes, server side and in a browser.

    python bench/dashboard_bench.py [--jobs 20000] [--no-browser] [--store sqlite|dynamodb]

Fills a fresh job store with ``--jobs`` real-looking attempts (tests/dashboard_data.py): a sqlite
file, or with ``--store dynamodb`` a table on a moto server started in its own process (moto is
Python answering each call in-process: its times are moto's, not DynamoDB's on AWS);
starts ``sqsmaster dashboard`` in its own process and times, over HTTP on 127.0.0.1:
  * every page of /api/jobs, newest to oldest (50 rows a page, through the store's cursor),
  * filtered pages (status, task, kwargs text, exception, worker, since), first and deepest,
  * each view's API (overview, running, failures, dead letters, workers) and HTML shell,
  * in headless Chromium (when installed): clicking "Older" through 30 pages, click to table drawn.
Exits 1 when any page takes a second or more (the issue's bound).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqsmaster.store import open_store  # noqa: E402
from tests.dashboard_data import fill  # noqa: E402
from tests.dashboard_kit import DashboardServer, browser_missing, chrome  # noqa: E402

BOUND = 1.0
QUEUES = ["http://127.0.0.1:1/123456789012/solver-jobs", "http://127.0.0.1:1/123456789012/image-jobs"]


#: How long the bench waits for one page (s): moto answers DynamoDB queries over 20,000 items slowly.
TIMEOUT = 30.0


#: Views whose scans the dashboard keeps for SUMMARY_CACHE_SECONDS: their first ask here scans, the rest are cached.
#: (The overview's scan is kept too; it was asked before the walks, so its lines below mix both.)
SUMMARISING = ("/api/failures", "/api/dead-letters")

def get(url: str) -> tuple[float, dict]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        body = answer.read()
    elapsed = time.perf_counter() - start
    try:
        return elapsed, json.loads(body)
    except ValueError:
        return elapsed, {}


def line(name: str, times: list[float]) -> float:
    worst = max(times)
    print(f"{name:<44} {len(times):>6} {1000 * statistics.median(times):>8.1f} {1000 * worst:>8.1f}")
    return worst


def walk(base: str, query: str, pages: int | None = None) -> list[float]:
    """Every page of /api/jobs?query, newest first (the first ``pages`` only if given); the time of each."""
    times, cursor = [], ""
    while cursor is not None and (pages is None or len(times) < pages):
        elapsed, data = get(f"{base}/api/jobs?limit=50&{query}&cursor={cursor}")
        times.append(elapsed)
        cursor = data["cursor"]
    return times


def browser_pages(base: str, pages: int) -> list[float]:
    """Click "Older" ``pages`` times; the time from each click to the next page's table drawn."""
    driver = chrome()
    try:
        driver.get(base + "/jobs")
        times = []
        wait_for_text(driver, lambda t: t.startswith("page 1"))
        for number in range(2, pages + 2):
            start = time.perf_counter()
            driver.execute_script("document.getElementById('next').click()")
            wait_for_text(driver, lambda t, n=number: t.startswith(f"page {n} "))
            times.append(time.perf_counter() - start)
        return times
    finally:
        driver.quit()


def wait_for_text(driver, condition, timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        text = driver.execute_script("const e = document.getElementById('page-info'); return e && e.innerText")
        if text and condition(text):
            return
        time.sleep(0.005)
    raise SystemExit("the page did not change within 30 s")


@contextlib.contextmanager
def store_url(kind: str) -> Iterator[str]:
    """A fresh job store's URL: a sqlite file, or a DynamoDB table on a moto server of its own (stopped after)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/jobs.db"
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto_server did not listen within 30 s") from None
                time.sleep(0.1)
        # read_timeout: moto answers a query over 20,000 items in seconds where DynamoDB takes milliseconds
        yield f"dynamodb://dashboard-bench?endpoint=http://127.0.0.1:{port}&region=us-east-1&read_timeout=60"
    finally:
        moto.kill()
        moto.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--store", choices=["sqlite", "dynamodb"], default="sqlite",
                        help="sqlite (a file) or dynamodb (a table on a local moto server: moto's speed, not AWS's)")
    parser.add_argument("--pages", type=int, default=None,
                        help="walk only the first N pages of each listing (default: all; 3 with --store dynamodb, "
                             "where moto reads its whole table for each query)")
    parser.add_argument("--repeat", type=int, default=None, help="times each view is asked (default 5; 2 on dynamodb)")
    args = parser.parse_args()
    pages = args.pages if args.pages is not None else (3 if args.store == "dynamodb" else None)
    repeat = args.repeat or (2 if args.store == "dynamodb" else 5)
    if args.store == "dynamodb":
        global TIMEOUT
        TIMEOUT = 600.0
    print(f"store: {args.store}; load average {' '.join(f'{n:.2f}' for n in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    with store_url(args.store) as url:
        store = open_store(url)
        start = time.perf_counter()
        fill(store, args.jobs, time.time(), QUEUES, span=24 * 3600.0)
        store.close()
        print(f"filled {args.jobs} attempts in {time.perf_counter() - start:.1f} s\n")
        with DashboardServer(url, QUEUES) as server:
            base = server.url
            # The server's first request that asks SQS imports boto3 and builds clients: once per process.
            # (The bench's queues are on a closed port: each SQS question fails fast, as an unreachable one.)
            cold, _ = get(base + "/api/overview")
            print(f"first request after start (imports boto3): {1000 * cold:.0f} ms\n")
            print(f"{'page':<44} {'pages':>6} {'p50 ms':>8} {'max ms':>8}")
            every = "every page" if pages is None else f"first {pages} pages"
            worst = [line(f"/api/jobs, {every} newest to oldest", walk(base, "", pages))]
            for query in ("status=failed", "task=solve_route", "text=depot", "exception=infeasible",
                          "worker=ip-10-0-1-17:4101", "since=2h", "status=failed&task=fetch_report"):
                worst.append(line(f"/api/jobs?{query}, {every}", walk(base, query, pages)))
            for path in ("/api/overview", "/api/running", "/api/failures", "/api/dead-letters", "/api/workers",
                         "/api/actions", "/", "/jobs", "/failures"):
                times = [get(base + path)[0] for _ in range(repeat)]
                if path in SUMMARISING:  # the first ask scans the store; the next, within 10 s, are served cached
                    worst.append(line(f"{path} (scan)", times[:1]))
                    if times[1:]:
                        line(f"{path} (cached, within 10 s)", times[1:])
                else:
                    worst.append(line(path, times))
            missing = browser_missing()
            if args.no_browser or missing:
                print(f"\n(no browser timing: {missing or '--no-browser'})")
            else:
                worst.append(line("browser: click Older -> table drawn", browser_pages(base, 30)))
    slowest = max(worst)
    print(f"\nslowest page {1000 * slowest:.0f} ms: " + ("under" if slowest < BOUND else "OVER") + " the 1 s bound")
    return 0 if slowest < BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
