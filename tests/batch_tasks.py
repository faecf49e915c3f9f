"""Batch tasks for the worker tests (used with ``--tasks tests.batch_tasks``); each call records its batch."""

from __future__ import annotations

import os
import time

from sqsmaster import task

from .worker_tasks import record

# batch_wait of 5 s: a margin for a loaded machine, where a receive on moto can take a second; the gathering
# stops as soon as a batch is full or a receive comes back empty, so it never costs the tests those seconds.


@task(batch=25, batch_wait=5)
def insert_rows(batch: list) -> None:
    record("batch", ids=[kwargs["id"] for kwargs in batch])


@task(batch=25, batch_wait=5)
def failing_rows(batch: list) -> None:
    record("batch", ids=[kwargs["id"] for kwargs in batch])
    raise RuntimeError("bulk insert failed")


@task(batch=25, batch_wait=5, hard_timeout=1, isolation="process")
def stuck_rows(batch: list) -> None:
    record("batch", ids=[kwargs["id"] for kwargs in batch])
    time.sleep(60)


@task(batch=25, batch_wait=5)
def slow_rows(batch: list) -> None:
    record("batch", ids=[kwargs["id"] for kwargs in batch])
    time.sleep(float(batch[0]["seconds"]))


@task(batch=25, batch_wait=5)
def stall_rows_once(batch: list) -> None:
    """The first call of the worker sleeps 30 s (long enough to be killed); the next ones return at once."""
    try:
        with open(os.environ["SQSMASTER_TEST_RECORD"]) as lines:
            first = not any('"batch"' in line for line in lines)
    except FileNotFoundError:
        first = True
    record("batch", ids=[kwargs["id"] for kwargs in batch])
    if first:
        time.sleep(30)
