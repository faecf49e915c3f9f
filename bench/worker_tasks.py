"""The no-op task the sqsmaster worker runs in the benchmark."""

from sqsmaster import task  # type: ignore[attr-defined]  # the registry (issue 4) may not be merged yet


@task
def noop(**kwargs: object) -> None:
    pass
