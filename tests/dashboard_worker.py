"""A real worker process for the dashboard's kill test, with a minimal job-store observer.

``python -m tests.dashboard_worker QUEUE_URL STORE_URL`` runs one task (``spin``: a Python loop
for ``seconds``) under :class:`sqsmaster.Worker`, with an observer on the worker's real hooks
(:mod:`sqsmaster.worker.events`) that writes the attempt's row to the store and, at each
heartbeat tick, stops the task when the store holds a kill flag for it. It is the least a
recorder must do for the dashboard to kill a task; the full recorder (background writer,
worker rows, cancel) is the worker's own (``sqsmaster worker --store``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from sqsmaster import Worker, task
from sqsmaster.store import KILL, AttemptRow, open_store
from sqsmaster.worker.events import AttemptStart, WorkerEvents
from sqsmaster.worker.worklog import AttemptRecord


@task
def spin(seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class StoreProbe(WorkerEvents):
    def __init__(self, store_url: str) -> None:
        self.store = open_store(store_url)
        self.rows: dict[str, AttemptRow] = {}

    def attempt_started(self, start: AttemptStart) -> None:
        row = AttemptRow(start.message_id, start.attempt, start.task, start.queue_url, socket.gethostname(),
                         os.getpid(), start.started, kwargs=json.dumps(start.kwargs, sort_keys=True),
                         deadline=start.deadline, lease=start.lease)
        self.rows[start.message_id] = row
        self.store.put_attempt(row)

    def heartbeat(self, start: AttemptStart, at: float, beats: int) -> None:
        self.store.heartbeat(start.message_id, start.attempt, at, beats)

    def keep_running(self, start: AttemptStart) -> bool:
        flag = self.store.flags([start.message_id]).get(start.message_id)
        if flag is None or flag.kind != KILL:
            return True
        self.store.flag_done(start.message_id, time.time())
        return False

    def attempt_ended(self, record: AttemptRecord) -> None:
        row = self.rows.pop(record.message_id)
        row.ended, row.runtime = time.time(), record.runtime
        row.outcome = record.job.outcome if record.job is not None else record.outcome
        row.action = record.action
        self.store.put_attempt(row)


if __name__ == "__main__":
    queue_url, store_url = sys.argv[1], sys.argv[2]
    worker = Worker(queue_url, "tests.dashboard_worker", sqs_timeout=3, alarm_timeout=0.5, hard_timeout=120,
                    wait_time=1, max_tasks=1, observers=[lambda: StoreProbe(store_url)])
    sys.exit(worker.run())
