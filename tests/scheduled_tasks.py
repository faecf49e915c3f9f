"""A periodic task for the scheduler's end-to-end test, in a registry of its own (a schedule in the default
registry would reach every other test's worker). Its slots go to $PERIODIC_TEST_QUEUE, a queue no worker
reads, so the test counts them there."""

from __future__ import annotations

import os

from sqsmaster import Registry, every

registry = Registry()


@registry.task(schedule=every(seconds=1, queue=os.environ.get("PERIODIC_TEST_QUEUE")))
def each_second() -> None:
    """Never run in the test: its messages wait on a queue no worker reads."""
