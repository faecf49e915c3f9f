"""Periodic tasks in real worker processes: one scheduler per worker (a pool's first child), each slot sent
once, on moto SQS over HTTP and a shared sqlite:// job store. The slots go to a queue no worker reads
(tests/scheduled_tasks.py), where the test counts them by their ``schedule_slot`` attribute."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from typing import Any

from .test_scheduler import sent_slots
from .workerkit import WorkerRun, wait_for


def test_real_workers_send_each_slot_once_from_one_scheduler_per_pool(make_queue, sqs_client, tmp_path):
    # Given a task due every second whose messages go to a queue no worker reads, and three workers on one
    # store: a pool of two processes, a single process, and one started with --no-scheduler
    slots_url, url = make_queue(), make_queue()
    store = f"sqlite:///{tmp_path}/jobs.db"
    common = ["--tasks", "tests.scheduled_tasks", "--store", store, "--wait-time", "1"]
    env = {"PERIODIC_TEST_QUEUE": slots_url}
    runs = [WorkerRun(url, [*common, *extra], tmp_path / "records.jsonl", env=env)
            for extra in (["--concurrency", "2"], [], ["--no-scheduler"])]
    seen: Counter = Counter()

    def four_slots_sent() -> bool:
        seen.update(sent_slots(sqs_client, slots_url))
        return len(seen) >= 4

    try:
        for run in runs:
            run.wait_until_ready(timeout=30)
        # When they run for at least four slots
        wait_for(four_slots_sent, 30, "four slots")
    finally:
        for run in runs:
            run.send_signal(signal.SIGTERM)
        codes = [run.wait(timeout=60) for run in runs]
    seen.update(sent_slots(sqs_client, slots_url))
    # Then each slot went out once, on the one-second grid
    assert codes == [0, 0, 0], [run.stderr for run in runs]
    assert set(seen.values()) == {1}
    assert all(key.startswith("each_second@") for key in seen)
    # And one scheduler ran per worker that may run one: the pool's first child, the single process
    assert [run.stderr.count("scheduler started") for run in runs] == [1, 1, 0]


def test_a_pool_whose_scheduling_child_is_killed_goes_on_sending_slots(make_queue, sqs_client, tmp_path):
    # Given a pool of two worker processes sending a slot every second to a queue nobody reads
    slots_url, url = make_queue(), make_queue()
    args = ["--tasks", "tests.scheduled_tasks", "--store", f"sqlite:///{tmp_path}/jobs.db", "--wait-time", "1",
            "--concurrency", "2"]
    pool = WorkerRun(url, args, tmp_path / "records.jsonl", env={"PERIODIC_TEST_QUEUE": slots_url})
    seen: Counter = Counter()

    def slots_sent(count: int) -> Any:
        def enough() -> bool:
            seen.update(sent_slots(sqs_client, slots_url))
            return len(seen) >= count
        return enough

    try:
        pool.wait_until_ready(timeout=30)
        wait_for(slots_sent(2), 30, "two slots")
        # When its first child, the one that schedules, is killed with SIGKILL
        first_child = int(re.search(r"worker process 0 started \(pid (\d+)\)", pool.stderr).group(1))
        os.kill(first_child, signal.SIGKILL)
        wait_for(lambda: pool.stderr.count("worker process 0 started") == 2, 30, "a new first child")
        # Then its replacement schedules: slots go on, each sent once
        wait_for(slots_sent(len(seen) + 3), 30, "three more slots")
    finally:
        pool.send_signal(signal.SIGTERM)
        code = pool.wait(timeout=60)
    seen.update(sent_slots(sqs_client, slots_url))
    assert code == 4, pool.stderr  # a worker process died: the pool says so
    assert set(seen.values()) == {1}
    assert pool.stderr.count("scheduler started") == 2
