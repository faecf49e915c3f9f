"""sqlite://: a heartbeat never waits on a write lock the task holds.

A task that writes to its own queue file holds SQLite's write lock again and again.
Heartbeats run on their own thread and connection with a busy wait bounded below the
lease margin, so they slip in between the task's transactions instead of stalling it.
"""

from __future__ import annotations

import time

from sqsmaster import MessageHandler, TaskManager

SUBMITS = 5000


def test_a_task_submitting_to_its_own_sqlite_queue_runs_as_fast_as_its_submits_under_heartbeats(tmp_path):
    # Given a sqlite:// queue, and how long 5,000 submits to it take alone on this machine right now
    tm = TaskManager(f"sqlite:///{tmp_path}/jobs.db?queue=self")
    started = time.monotonic()
    for index in range(SUBMITS):
        tm.submit("child", index=index)
    alone = time.monotonic() - started
    tm.purge()
    tm.submit("spawn")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=5))

    class Spawn(MessageHandler):
        def run(self) -> None:
            for index in range(SUBMITS):
                tm.submit("child", index=index)

    # When a signal-isolated task makes the same submits under a heartbeat every 0.05 s
    started = time.monotonic()
    with Spawn(message, sqs_timeout=2, alarm_timeout=0.05, hard_timeout=120, **kwargs) as handler:
        handler.run()
    took = time.monotonic() - started

    # Then it took about as long as the submits alone (the old SIGALRM heartbeat waited out a 30 s busy
    # timeout inside the task's own transaction); twice plus a second is a margin for a loaded machine.
    # Its lease was kept by heartbeats all along, and the task succeeded and was deleted.
    assert handler.outcome == "succeeded"
    assert took < 2 * alone + 1.0, (took, alone)
    assert not handler.lease.lost
    assert handler.lease.extensions >= 1  # heartbeats did run while the task held the lock again and again
    attributes = tm.attributes()
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        str(SUBMITS), "0")
