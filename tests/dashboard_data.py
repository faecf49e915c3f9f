"""Real-looking job store contents for the dashboard's tests, benchmark and screenshots.

``fill(store, count, now, queues)`` writes ``count`` finished attempts spread over the last
``span`` seconds (most succeed; some fail with a few exception types, some time out, some are
dead-lettered after their last receive), a few running attempts (one of them stale) and
workers. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from sqsmaster.store import AttemptRow, JobStore, WorkerRow

TASKS = {"train_model": (600.0, 3600.0), "resize_image": (0.5, 4.0), "solve_route": (30.0, 900.0),
         "fetch_report": (1.0, 20.0)}
FAILURES = [("fetch_report", "ConnectionError: HTTPSConnectionPool(host='reports.internal', port=443): timed out"),
            ("solve_route", "ValueError: infeasible: 14 stops, capacity 12"),
            ("train_model", "MemoryError: "), ("resize_image", "OSError: cannot identify image file 'img/0412.png'")]
HOSTS = ["ip-10-0-1-17", "ip-10-0-1-23", "ip-10-0-2-41"]


def traceback_for(exception: str, task: str) -> str:
    kind = exception.split(":", 1)[0]
    return ("Traceback (most recent call last):\n"
            '  File "/srv/app/sqsmaster/worker/attempts.py", line 88, in run\n    result = function(**kwargs)\n'
            f'  File "/srv/app/tasks.py", line 42, in {task}\n    raise {kind}(...)\n{exception}\n')


def kwargs_for(task: str, index: int, rng: random.Random) -> dict[str, Any]:
    if task == "resize_image":
        return {"path": f"img/{index:05d}.png", "width": rng.choice([320, 640, 1280])}
    if task == "train_model":
        return {"dataset": f"s3://ml-data/batch-{index % 40}", "trees": rng.choice([200, 500, 1000]), "depth": 8}
    if task == "solve_route":
        return {"depot": rng.choice(["LYS", "BOD", "NTE"]), "stops": rng.randint(5, 40)}
    return {"report": f"r-{index}", "day": f"2026-11-{1 + index % 28:02d}"}


def finished_row(index: int, rng: random.Random, now: float, span: float, queues: list[str]) -> AttemptRow:
    task = rng.choice(list(TASKS))
    low, high = TASKS[task]
    runtime = rng.uniform(low, high) / (10.0 if high > 100 else 1.0)  # the long ones scaled down
    started = now - rng.uniform(60, span)
    host = rng.choice(HOSTS)
    row = AttemptRow(message_id=f"{index:08d}-{rng.getrandbits(48):012x}", attempt=1, task=task,
                     queue=queues[index % len(queues)], host=host, pid=4100 + index % 8, started=started,
                     kwargs=json.dumps(kwargs_for(task, index, rng), sort_keys=True),
                     submitted=started - rng.uniform(0, 30),
                     deadline=started + 3600, lease=60, heartbeats=int(runtime // 20), last_heartbeat=started + runtime,
                     ended=started + runtime, outcome="succeeded", action="deleted", runtime=runtime,
                     peak_memory=rng.randint(80, 900) * 2**20)
    roll = rng.random()
    if roll < 0.06:
        failing = [f for f in FAILURES if f[0] == task]
        exception = failing[0][1] if failing else f"RuntimeError: {task} failed"
        row.attempt = rng.randint(1, 3)
        row.outcome, row.exception, row.traceback = "failed", exception, traceback_for(exception, task)
        row.action = "dead-lettered" if row.attempt == 3 else "retry"
    elif roll < 0.075:
        row.outcome, row.action, row.exception = "timed out", "retry", "HardTimeoutExceeded: hard timeout of 3600 s"
    return row


def fill(store: JobStore, count: int, now: float, queues: list[str], span: float = 3 * 3600.0,
         seed: int = 7, running: int = 4) -> None:
    """Write ``count`` finished attempts, ``running`` running ones (the last stale) and three workers."""
    rng = random.Random(seed)
    finished = [finished_row(index, rng, now, span, queues) for index in range(count)]
    bulk = getattr(store, "put_attempts", None)  # DynamoDB: 25 rows per BatchWriteItem, not one request per row
    if bulk is not None:
        bulk(finished)
    else:
        for row in finished:
            store.put_attempt(row)
    for index in range(running):
        task = ["train_model", "solve_route", "train_model", "resize_image"][index % 4]
        started = now - [2400.0, 300.0, 3300.0, 900.0][index % 4]
        stale = index == running - 1
        store.put_attempt(AttemptRow(
            message_id=f"run-{index:04d}-{rng.getrandbits(32):08x}", attempt=1 + index % 2, task=task,
            queue=queues[index % len(queues)], host=HOSTS[index % len(HOSTS)], pid=5200 + index, started=started,
            kwargs=json.dumps(kwargs_for(task, index, rng), sort_keys=True), submitted=started - 12,
            deadline=started + 3600,
            lease=60, heartbeats=int((now - started) // 20), last_heartbeat=now - (600 if stale else 7),
            peak_memory=rng.randint(200, 2000) * 2**20))
    for index, host in enumerate(HOSTS):
        store.put_worker(WorkerRow(host=host, pid=4100 + index, started=now - 20000, last_seen=now - 5,
                                   version="0.1.0", queues=queues, concurrency=2, busy=1 if index < 2 else 0))
