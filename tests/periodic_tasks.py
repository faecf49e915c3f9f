"""Tasks for the task-lock tests, in a registry of their own (a lock or a schedule in the
default registry would reach every other test's worker). Each records to $SQSMASTER_TEST_RECORD, as
tests/worker_tasks.py's do."""

from __future__ import annotations

import time

from sqsmaster import Registry

from .worker_tasks import record

registry = Registry()


@registry.task(lock=True, lock_retry=1)
def exclusive(id: str, seconds: float = 0.3) -> None:
    record("start", id=id)
    time.sleep(seconds)
    record("end", id=id)


@registry.task(lock_key=("user",), lock_retry=1)
def per_user(id: str, user: str, seconds: float = 0.3) -> None:
    record("start", id=id, user=user)
    time.sleep(seconds)
    record("end", id=id, user=user)
