"""Draw docs/dashboard-*.png: each view of the dashboard in headless Chromium, over real-looking data.

    python -m tests.dashboard_screenshots [--out docs]

An embedded moto SQS server holds two queues with messages waiting, in flight and
dead-lettered; a fresh sqlite job store holds 3,000 attempts of the last three hours,
four running tasks (one stale) and three workers (tests/dashboard_data.py). Needs
chromium and chromium-driver (tests/browser_setup.sh) and the dashboard extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqsmaster.ops.embedded import EmbeddedSQS
from sqsmaster.store import JobFilter, open_store

from .dashboard_data import fill
from .dashboard_kit import ROOT, DashboardServer, browser_missing, chrome

VIEWS = ["overview", "running", "jobs", "failures", "dead-letters", "workers", "timeline"]


def queues(sqs: EmbeddedSQS) -> list[str]:
    """Two queues with a backlog, messages in flight and a few dead letters."""
    client = sqs.client
    urls = []
    for name, waiting, in_flight, dead in (("solver-jobs", 37, 4, 3), ("image-jobs", 112, 2, 1)):
        dlq = sqs.create_queue(f"{name}-dlq")
        url = sqs.create_queue(name, visibility_timeout=60, dead_letter_url=dlq, max_receive_count=3)
        for index in range(waiting + in_flight):
            client.send_message(QueueUrl=url, MessageBody=json.dumps({"task": "solve_route", "kwargs": {"n": index}}))
        client.receive_message(QueueUrl=url, MaxNumberOfMessages=in_flight, VisibilityTimeout=3600)
        for index in range(dead):
            client.send_message(QueueUrl=dlq, MessageBody=json.dumps({"task": "fetch_report", "kwargs": {"n": index}}))
        urls.append(url)
    return urls


def until(driver: Any, script: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise SystemExit(f"the page did not get ready within {timeout} s")
        time.sleep(0.1)


def shoot(out: Path) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as folder, EmbeddedSQS() as sqs:
        urls = queues(sqs)
        store_url = f"sqlite:///{folder}/jobs.db"
        store = open_store(store_url)
        fill(store, 3000, time.time(), urls)
        failed = store.attempts(JobFilter(status="failed", task="solve_route", exception="ValueError"), time.time(),
                                limit=50).rows
        failed = next(row for row in failed if row.attempt == 3)
        for attempt in (1, 2):  # the attempts before the last: a job page of three
            earlier = replace(failed, attempt=attempt, action="retry", started=failed.started - 300 * (3 - attempt),
                              ended=failed.ended - 300 * (3 - attempt) if failed.ended else None)
            store.put_attempt(earlier)
        with DashboardServer(store_url, urls) as server:
            driver = chrome(1280, 860)
            try:
                for view in [*VIEWS, f"jobs/{failed.message_id}"]:
                    driver.get(f"{server.url}/{view}")
                    if view == "timeline":  # a quarter of an hour: a picture that fits the screen
                        driver.execute_script("const f = document.getElementById('window');"
                                              "f.elements.since.value = '15m'; f.requestSubmit()")
                    # drawn, SQS's depths in (they may come one refresh later), the picture decoded
                    until(driver, "const u = document.getElementById('updated').innerText;"
                                  "const i = document.getElementById('timeline');"
                                  "return u.startsWith('updated') && !document.body.innerText.includes("
                                  "'not answered') && (!i || (i.complete && i.naturalWidth > 0))")
                    if view.startswith("jobs/"):
                        driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
                    time.sleep(0.3)
                    path = out / f"dashboard-{'job' if view.startswith('jobs/') else view}.png"
                    driver.save_screenshot(str(path))
                    written.append(path)
            finally:
                driver.quit()
        store.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        print(f"no screenshots: {missing}", file=sys.stderr)
        return 2
    for path in shoot(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
