"""The supervisor in signal isolation: heartbeats, hard timeouts and what sqstaskmaster got wrong."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from sqsmaster import HardTimeoutExceeded, LocalQueue, MessageHandler, QueueError, TaskManager
from sqsmaster.backends.memory import LocalQueue as _LocalQueue

from .conftest import queue_counts


class Sleeper(MessageHandler):
    def run(self) -> None:
        time.sleep(self.kwargs["seconds"])


class SwallowingLoop(MessageHandler):
    """A pure-Python loop whose author catches every Exception."""

    def run(self) -> None:
        while True:
            try:
                sum(range(1000))
            except Exception:
                pass


def receive_one(tm: TaskManager, sqs_timeout: int):
    task, kwargs, message = next(tm.task_generator(wait_time=1, sqs_timeout=sqs_timeout))
    return kwargs, message


def test_a_task_three_times_longer_than_its_visibility_timeout_is_never_seen_by_another_consumer(
        make_queue, sqs_client):
    # Given a task that runs 6 s with a visibility timeout of 2 s
    url = make_queue(visibility_timeout=2)
    tm = TaskManager(url)
    tm.submit("Long", seconds=6)
    kwargs, message = receive_one(tm, sqs_timeout=2)

    # And a second consumer polling the queue all along
    stolen = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            stolen.extend(sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=0, VisibilityTimeout=0)
                          .get("Messages", []))
            time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        # When the handler runs it
        with Sleeper(message, sqs_timeout=2, alarm_timeout=0.9, hard_timeout=30, **kwargs) as handler:
            handler.run()
    finally:
        stop.set()
        poller.join()

    # Then the other consumer never saw it, it succeeded after heartbeats and was deleted once
    assert stolen == []
    assert handler.outcome == "succeeded"
    assert handler.lease.extensions >= 5
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_hard_timeout_stops_a_loop_that_catches_exception_on_time(make_queue, sqs_client):
    url = make_queue()
    tm = TaskManager(url)
    tm.submit("Loop")
    kwargs, message = receive_one(tm, sqs_timeout=30)

    with SwallowingLoop(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=1, **kwargs) as handler:
        handler.run()
    elapsed = handler.runtime

    assert handler.outcome == "timed out"
    assert isinstance(handler.exception, HardTimeoutExceeded)
    assert 1.0 <= elapsed < 1.5
    # not deleted: handed back with a 1 s backoff, then visible again
    time.sleep(1.5)
    assert queue_counts(sqs_client, url) == (1, 0, 0)


def test_hard_timeout_still_fires_when_every_extension_fails(make_queue, sqs_client):
    # Given a running task whose message is deleted behind the handler's back
    url = make_queue()
    tm = TaskManager(url)
    tm.submit("Loop")
    kwargs, message = receive_one(tm, sqs_timeout=3)
    sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message.receipt_handle)

    # When it runs with heartbeats every 0.3 s, all of which fail
    with SwallowingLoop(message, sqs_timeout=3, alarm_timeout=0.3, hard_timeout=1.5, **kwargs) as handler:
        handler.run()

    # Then the lease is known lost and the hard timeout still stopped it on time
    assert handler.lease.lost
    assert handler.outcome == "timed out"
    assert 1.5 <= handler.runtime < 2.0


class UnreachableHeartbeats(_LocalQueue):
    """A queue whose visibility changes fail like a network outage."""

    def change_visibility(self, receipt_handle, visibility_timeout, message_id=None):
        raise QueueError("connection refused")


def test_hard_timeout_still_fires_when_heartbeats_hit_network_errors():
    tm = TaskManager("mem://outage", queue_constructor=UnreachableHeartbeats)
    tm.submit("Loop")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with SwallowingLoop(message, sqs_timeout=30, alarm_timeout=0.2, hard_timeout=1, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "timed out"
    assert handler.lease.failed_extensions >= 3
    assert 1.0 <= handler.runtime < 1.5


class CountingQueue(_LocalQueue):
    """Counts visibility changes: what a server would see."""

    changes: list[int] = []

    def change_visibility(self, receipt_handle, visibility_timeout, message_id=None):
        CountingQueue.changes.append(visibility_timeout)
        super().change_visibility(receipt_handle, visibility_timeout, message_id)


def test_no_extension_call_when_the_receive_already_set_the_visibility():
    CountingQueue.changes = []
    tm = TaskManager("mem://counting", queue_constructor=CountingQueue)
    tm.submit("Quick", seconds=0)
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with Sleeper(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "succeeded"
    assert CountingQueue.changes == []


def test_the_handler_extends_first_when_the_receive_set_a_shorter_visibility():
    CountingQueue.changes = []
    tm = TaskManager("mem://counting2", queue_constructor=CountingQueue)
    tm.submit("Quick", seconds=0)
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=5))
    with Sleeper(message, sqs_timeout=60, alarm_timeout=10, **kwargs) as handler:
        handler.run()
    assert CountingQueue.changes == [60]


def test_no_stray_alarm_when_the_first_extension_fails(make_queue, sqs_client):
    # Given a message that is no longer ours before the handler starts
    url = make_queue()
    tm = TaskManager(url)
    tm.submit("Quick", seconds=0)
    kwargs, message = receive_one(tm, sqs_timeout=5)
    sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message.receipt_handle)
    ran = []

    class Probe(MessageHandler):
        def run(self) -> None:
            ran.append(signal.getitimer(signal.ITIMER_REAL))

    # When the handler must extend (sqs_timeout above the receive's) and that fails
    with Probe(message, sqs_timeout=60, alarm_timeout=10, **kwargs) as handler:
        armed = signal.getitimer(signal.ITIMER_REAL)[0]
        handler.run()

    # Then no alarm was armed, the task never ran, and the failure was reported, not raised
    assert armed == 0
    assert ran == []
    assert handler.outcome == "failed"


def test_the_previous_sigalrm_handler_is_restored():
    calls = []
    previous = signal.signal(signal.SIGALRM, lambda *_: calls.append(1))
    try:
        tm = TaskManager("mem://restore", queue_constructor=LocalQueue)
        tm.submit("Quick", seconds=0.3)
        _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=5))
        with Sleeper(message, sqs_timeout=5, alarm_timeout=0.1, **kwargs) as handler:
            handler.run()
        assert handler.lease.extensions >= 2
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.1)
        assert calls == [1]
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_keyboard_interrupt_releases_the_message_at_once_and_propagates():
    class Interrupted(MessageHandler):
        def run(self) -> None:
            raise KeyboardInterrupt

    tm = TaskManager("mem://interrupt")
    tm.submit("Stop")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=300))
    with pytest.raises(KeyboardInterrupt):
        with Interrupted(message, sqs_timeout=300, alarm_timeout=100, **kwargs) as handler:
            handler.run()
    assert handler.outcome == "interrupted"
    assert tm.attributes()["ApproximateNumberOfMessages"] == "1"


def test_a_stuck_task_is_stopped_and_notified():
    notified = []

    class Stuck(MessageHandler):
        def running(self) -> bool:
            return False

        def notify(self, exception, context=None):
            notified.append((type(exception).__name__, context["message_id"]))

        def run(self) -> None:
            time.sleep(10)

    tm = TaskManager("mem://stuck")
    tm.submit("Stuck")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    started = time.monotonic()
    with Stuck(message, sqs_timeout=30, alarm_timeout=0.2, **kwargs) as handler:
        handler.run()
    assert time.monotonic() - started < 1
    assert handler.outcome == "stuck"
    assert notified == [("TaskStuck", message.message_id)]


def test_notify_receives_the_exception_and_the_body():
    notified = []

    class Failing(MessageHandler):
        def run(self) -> None:
            raise ValueError("bad input")

        def notify(self, exception, context=None):
            notified.append((exception, context))

    tm = TaskManager("mem://notify")
    tm.submit("Fail", x=1)
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    with Failing(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        handler.run()
    (exception, context), = notified
    assert isinstance(exception, ValueError)
    assert context["body"] == '{"task": "Fail", "kwargs": {"x": 1}}'
    assert context["ApproximateReceiveCount"] == "1"
    # handed back with a 1 s backoff, not deleted
    assert tm.attributes()["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_the_hard_timeout_cannot_be_caught_as_exception():
    assert issubclass(HardTimeoutExceeded, BaseException)
    assert not issubclass(HardTimeoutExceeded, Exception)


def test_heartbeats_never_use_the_client_the_caller_handed_in(make_queue, sqs_server, sqs_client):
    # Given a TaskManager built on the caller's own boto3 client, which counts its visibility calls
    import boto3

    client = boto3.client("sqs", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    calls = []
    client.meta.events.register("before-call.sqs.ChangeMessageVisibility", lambda **_: calls.append(1))
    url = make_queue(visibility_timeout=2)
    tm = TaskManager(url, client=client)
    tm.submit("Long", seconds=3)
    kwargs, message = receive_one(tm, sqs_timeout=2)

    # When a task outlives its visibility timeout under heartbeats
    with Sleeper(message, sqs_timeout=2, alarm_timeout=0.5, **kwargs) as handler:
        handler.run()

    # Then the lease was kept by heartbeats that went through another client
    assert handler.outcome == "succeeded"
    assert handler.lease.extensions >= 4
    assert calls == []
    assert queue_counts(sqs_client, url) == (0, 0, 0)
