"""LocalQueue models SQS: visibility, redelivery, receive counts, delays, long polls, redrive."""

from __future__ import annotations

import threading
import time

import pytest

from sqsmaster import LeaseLost, LocalQueue, MessageHandler, TaskManager
from sqsmaster.backends import SendEntry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_received_message_is_hidden_until_its_visibility_timeout(clock):
    queue = LocalQueue("mem://vis", visibility_timeout=30, clock=clock)
    queue.send(SendEntry("a"))
    first, = queue.receive()
    assert queue.receive() == []
    clock.now += 29.9
    assert queue.receive() == []
    clock.now += 0.2
    again, = queue.receive()
    assert again.message_id == first.message_id
    assert (first.receive_count, again.receive_count) == (1, 2)
    assert again.receipt_handle != first.receipt_handle


def test_per_receive_visibility_and_change_visibility(clock):
    queue = LocalQueue("mem://per-receive", visibility_timeout=30, clock=clock)
    queue.send(SendEntry("a"))
    message, = queue.receive(visibility_timeout=5)
    clock.now += 4
    message.change_visibility(VisibilityTimeout=10)
    clock.now += 9
    assert queue.receive() == []
    message.change_visibility(VisibilityTimeout=0)
    assert len(queue.receive()) == 1


def test_a_stale_receipt_handle_loses_the_lease_and_deletes_nothing(clock):
    queue = LocalQueue("mem://stale", visibility_timeout=5, clock=clock)
    queue.send(SendEntry("a"))
    old, = queue.receive()
    clock.now += 6
    new, = queue.receive()
    with pytest.raises(LeaseLost) as info:
        old.change_visibility(VisibilityTimeout=10)
    assert info.value.code == "MessageNotInflight"
    old.delete()  # like SQS: "succeeds", deletes nothing
    assert queue.get_attributes()["ApproximateNumberOfMessagesNotVisible"] == "1"
    new.delete()
    assert queue.get_attributes()["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(LeaseLost):
        queue.change_visibility("never-issued", 5)


def test_visibility_cannot_pass_twelve_hours_from_receipt(clock):
    queue = LocalQueue("mem://cap", clock=clock)
    queue.send(SendEntry("a"))
    message, = queue.receive(visibility_timeout=43_000)
    clock.now += 42_000
    message.change_visibility(VisibilityTimeout=1_000)
    with pytest.raises(LeaseLost) as info:
        message.change_visibility(VisibilityTimeout=1_300)
    assert info.value.code == "InvalidParameterValue"


def test_delays_and_the_three_counts(clock):
    queue = LocalQueue("mem://counts", clock=clock)
    queue.send(SendEntry("now"))
    queue.send(SendEntry("later", delay_seconds=60))
    queue.send(SendEntry("taken"))
    queue.receive()
    attributes = queue.get_attributes()
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"],
            attributes["ApproximateNumberOfMessagesDelayed"]) == ("1", "1", "1")
    clock.now += 61
    # the delay is over, and so is the 30 s visibility of the one received
    assert {m.body for m in queue.receive(10)} == {"now", "later", "taken"}


def test_redrive_to_the_dead_letter_queue_after_max_receive_count(clock):
    dlq = LocalQueue("mem://dead", clock=clock)
    queue = LocalQueue("mem://live", visibility_timeout=1, clock=clock,
                       redrive_policy={"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 2})
    queue.send(SendEntry("poison"))
    for attempt in (1, 2):
        message, = queue.receive()
        assert message.receive_count == attempt
        clock.now += 2
    assert queue.receive() == []
    dead, = dlq.receive()
    assert dead.body == "poison"


def test_long_poll_returns_as_soon_as_a_message_arrives():
    queue = LocalQueue("mem://poll")
    threading.Timer(0.3, lambda: queue.send(SendEntry("late"))).start()
    started = time.monotonic()
    messages = queue.receive(wait_time=5)
    assert [m.body for m in messages] == ["late"]
    assert time.monotonic() - started < 2


def test_long_poll_waits_the_whole_wait_time_when_nothing_comes():
    started = time.monotonic()
    assert LocalQueue("mem://empty").receive(wait_time=1) == []
    assert 0.9 <= time.monotonic() - started < 1.5


def test_one_instance_per_url_and_class_not_a_process_wide_global():
    class MyQueue(LocalQueue):
        pass

    assert LocalQueue("mem://a") is LocalQueue("mem://a")
    assert LocalQueue("mem://a") is not LocalQueue("mem://b")
    assert MyQueue("mem://a") is not LocalQueue("mem://a")
    tm = TaskManager("https://sqs.us-east-1.amazonaws.com/1/q", queue_constructor=MyQueue)
    tm.submit("T")
    assert MyQueue("https://sqs.us-east-1.amazonaws.com/1/q").get_attributes()["ApproximateNumberOfMessages"] == "1"


def test_local_queue_runs_the_sqstaskmaster_style_loop():
    class Doubler(MessageHandler):
        results: list[int] = []

        def run(self) -> None:
            Doubler.results.append(self.kwargs["x"] * 2)

    producer = TaskManager("https://example.invalid/q", queue_constructor=LocalQueue)
    consumer = TaskManager("https://example.invalid/q", queue_constructor=LocalQueue)
    for x in range(3):
        producer.submit("Double", x=x)
    for _, kwargs, message in consumer.task_generator(wait_time=0, until_empty=True):
        with Doubler(message, sqs_timeout=20, alarm_timeout=5, **kwargs) as handler:
            handler.run()
    assert Doubler.results == [0, 2, 4]
    assert consumer.attributes()["ApproximateNumberOfMessages"] == "0"
