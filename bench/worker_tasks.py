"""The tasks the sqsmaster worker runs in the benchmarks: a no-op, and a task that sleeps (the request bill)."""

import time

from sqsmaster import task  # type: ignore[attr-defined]  # the registry (issue 4) may not be merged yet


@task
def noop(**kwargs: object) -> None:
    pass


@task
def sleepy(seconds: float = 0, **kwargs: object) -> None:
    time.sleep(seconds)
