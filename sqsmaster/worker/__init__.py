"""The worker: receive, run under supervision, delete or retry, and stop cleanly.

``Worker`` (the façade in :mod:`.facade`) drives :mod:`.loop`; :mod:`.receiving` takes messages
(priority queues, the idle long poll, prefetch leases), :mod:`.attempts` records each attempt's
outcome, :mod:`.deletes` batches the deletes, :mod:`.retry` and :mod:`.deadletter` decide what a
failure becomes, :mod:`.pool` runs ``--concurrency N`` children, :mod:`.signals` and
:mod:`.shutdown` stop it within its bounds, :mod:`.registry` maps task names to functions,
:mod:`.schedules` and :mod:`.scheduler` send periodic tasks, :mod:`.locks` keeps locked tasks from
overlapping, and :mod:`.worklog` / :mod:`.jobs` write what happened.
"""

from . import eager  # noqa: F401  (registers eager mode's runner with TaskManager)
from .facade import Worker

__all__ = ["Worker"]
