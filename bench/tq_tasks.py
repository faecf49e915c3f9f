"""The tasks task-queue runs in the benchmarks (task-queue imports them by module name)."""

import time

from taskqueue import queueable


@queueable
def noop(i: int) -> None:
    pass


@queueable
def sleepy(i: int, seconds: float) -> None:
    time.sleep(seconds)
