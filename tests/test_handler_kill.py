"""``MessageHandler.kill()``: an operator's order stops the task like a hard timeout, with its own outcome.

In-process on a mem:// queue; the kill comes from another thread, as it does from the heartbeat thread.
"""

from __future__ import annotations

import threading
import time

from sqsmaster import MessageHandler, Registry, TaskKilled, TaskManager, Worker
from sqsmaster.worker.events import KillOrder, WorkerEvents
from sqsmaster.worker.worklog import AttemptRecord

from .conftest import queue_counts


def received(name: str):
    tm = TaskManager(f"mem://{name}")
    tm.submit("Task")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    return tm, message, kwargs


def test_a_kill_stops_a_task_that_swallows_exceptions_outcome_killed_no_notify_and_the_message_kept():
    notified = []

    class Sleepy(MessageHandler):
        def run(self) -> None:
            try:
                time.sleep(30)
            except Exception:  # what task code does: it cannot catch the kill
                pass

        def notify(self, exception, context=None):
            notified.append(exception)

    tm, message, kwargs = received("kill-me")
    started = time.monotonic()
    with Sleepy(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        threading.Timer(0.2, handler.kill, args=("killed by ops@host",)).start()
        handler.run()
    assert time.monotonic() - started < 5  # 0.2 s; the margin is for a loaded machine
    assert handler.outcome == "killed"
    assert isinstance(handler.exception, TaskKilled) and "killed by ops@host" in str(handler.exception)
    assert notified == []  # an order, not a failure
    assert tm.attributes()["ApproximateNumberOfMessagesNotVisible"] == "1"  # handed back with the backoff


def test_a_kill_after_the_task_returned_changes_nothing_the_first_to_happen_wins():
    class Quick(MessageHandler):
        def run(self) -> str:
            return "done"

    tm, message, kwargs = received("kill-late")
    with Quick(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        handler.run()
        handler.kill("too late")  # the task already returned: the kill lands between run() and the ack
    assert handler.outcome == "succeeded"
    assert handler.exception is None
    assert tm.attributes()["ApproximateNumberOfMessages"] == "0"
    assert tm.attributes()["ApproximateNumberOfMessagesNotVisible"] == "0"  # deleted


def test_a_kill_after_the_with_block_is_a_no_op():
    class Quick(MessageHandler):
        def run(self) -> None:
            pass

    _, message, kwargs = received("kill-after")
    with Quick(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        handler.run()
    handler.kill("after the end")
    assert handler.outcome == "succeeded"


def test_a_real_running_false_is_still_stuck_not_killed():
    class Stuck(MessageHandler):
        def running(self) -> bool:
            return False

        def run(self) -> None:
            time.sleep(10)

    _, message, kwargs = received("still-stuck")
    with Stuck(message, sqs_timeout=30, alarm_timeout=0.2, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "stuck"


class KillEverything(WorkerEvents):
    """An observer that orders every running attempt killed, then its message deleted."""

    def __init__(self) -> None:
        self.ended: list[AttemptRecord] = []

    def kill_order(self, start):
        return KillOrder("killed by a test", then="delete")

    def attempt_ended(self, record):
        self.ended.append(record)


def test_a_worker_kills_what_an_observer_orders_killed_and_reports_it_in_attempt_record(make_queue, sqs_client):
    # Given a worker (in this process) whose observer orders every task killed, then its message deleted
    url = make_queue(visibility_timeout=30)
    registry = Registry()
    registry.task(lambda: time.sleep(30), name="slow")
    TaskManager(url).submit("slow")
    records: list[AttemptRecord] = []
    # When it runs the 30 s task
    code = Worker(url, registry, sqs_timeout=3, alarm_timeout=0.5, wait_time=1, max_tasks=1,
                  observers=[KillEverything], on_attempt_end=records.append).run()
    # Then the task stopped at its first heartbeat tick (0.5 s; 5 s of margin for a loaded machine), outcome
    # killed in the AttemptRecord and its job record, and the message was deleted as ordered
    assert code == 0
    [record] = records
    assert record.runtime < 5  # killed at 0.5 s, not the task's 30 s; the rest is margin for a loaded machine
    assert (record.outcome, record.action, record.job.outcome) == ("killed", "deleted", "killed")
    assert "killed by a test" in (record.error or "")
    assert queue_counts(sqs_client, url) == (0, 0, 0)
