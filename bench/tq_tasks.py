"""The no-op task task-queue runs in the benchmark (task-queue imports it by module name)."""

from taskqueue import queueable


@queueable
def noop(i: int) -> None:
    pass
