"""The producer/consumer loop end to end on a real SQS-compatible server."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import time
import uuid

import pytest

from sqsmaster import MalformedMessage, MessageHandler, TaskManager

from .conftest import drain, queue_counts


class Recorder(MessageHandler):
    """Records what ran; fails when asked to."""

    ran: list[tuple[str, dict]] = []

    def run(self) -> None:
        Recorder.ran.append((self.kwargs["name"], dict(self.kwargs)))
        if self.kwargs.get("fail"):
            raise ValueError("asked to fail")


@pytest.fixture(autouse=True)
def _reset_recorder():
    Recorder.ran = []


def test_readme_loop_runs_every_task_once_and_empties_the_queue(make_queue, sqs_client):
    # Given a queue with three submitted tasks
    url = make_queue()
    tm = TaskManager(url, sender_name="tests")
    for name in ("a", "b", "c"):
        assert "MessageId" in tm.submit("MyTask", name=name, size=3)

    # When the README's consumer loop drains it
    for task, kwargs, message in tm.task_generator(wait_time=0, sqs_timeout=5, until_empty=True):
        assert task == "MyTask"
        with Recorder(message, sqs_timeout=5, alarm_timeout=2, hard_timeout=30, **kwargs) as handler:
            handler.run()
        assert handler.outcome == "succeeded"

    # Then each ran once and nothing is left
    assert sorted(name for name, _ in Recorder.ran) == ["a", "b", "c"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_wire_format_is_sqstaskmasters(make_queue, sqs_client):
    url = make_queue()
    TaskManager(url, sender_name="producer-7").submit("Resize", width=10)
    raw = sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"][0]
    assert json.loads(raw["Body"]) == {"task": "Resize", "kwargs": {"width": 10}}
    assert raw["MessageAttributes"]["service_name"] == {"StringValue": "producer-7", "DataType": "String"}


def test_dates_decimals_and_uuids_arrive_in_their_documented_forms(make_queue):
    url = make_queue()
    tm = TaskManager(url)
    tm.submit("T", day=datetime.date(2024, 2, 29), at=datetime.datetime(2024, 2, 29, 12, 30, 1),
              price=decimal.Decimal("10.10"), id=uuid.UUID(int=1))
    _, kwargs, _ = next(tm.task_generator(wait_time=0, sqs_timeout=5))
    # str(value), as sqstaskmaster sends them: a datetime with a space, not ISO's "T"
    assert kwargs == {"day": "2024-02-29", "at": "2024-02-29 12:30:01", "price": "10.10",
                      "id": "00000000-0000-0000-0000-000000000001"}


def test_a_failure_comes_back_after_a_short_backoff_then_goes_to_the_dead_letter_queue(make_queue, sqs_client):
    # Given a queue that dead-letters after 2 receives, and a task that always fails
    url = make_queue(visibility_timeout=30, dead_letter=True, max_receive_count=2)
    dlq = make_queue.dead_letter_urls[url]
    tm = TaskManager(url)
    tm.submit("Flaky", name="x", fail=True)
    seen = []

    # When it is consumed until the queue is empty
    started = time.monotonic()
    for _, kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=30, until_empty=True):
        seen.append((message.receive_count, round(time.monotonic() - started, 1)))
        with Recorder(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
            handler.run()
        assert handler.outcome == "failed"

    # Then it came back after the backoff (1 s, not the 30 s visibility), its receive count raised,
    # and then moved to the dead-letter queue with the same body
    assert [count for count, _ in seen] == [1, 2]
    assert seen[1][1] < 10
    dead = drain(sqs_client, dlq)
    assert [json.loads(m["Body"]) for m in dead] == [{"task": "Flaky", "kwargs": {"name": "x", "fail": True}}]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_malformed_bodies_are_reported_and_the_loop_goes_on(make_queue, sqs_client):
    # Given a queue with two malformed bodies sent straight through boto3, then a good task
    url = make_queue(dead_letter=True, max_receive_count=1)
    sqs_client.send_message(QueueUrl=url, MessageBody="not json {")
    sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps({"kwargs": {}}))
    reports = []
    tm = TaskManager(url, notify=lambda exc, context=None: reports.append((exc, context)))
    tm.submit("Good", name="good")

    # When the loop consumes it
    tasks = []
    for task, kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=5, until_empty=True):
        tasks.append(task)
        with Recorder(message, sqs_timeout=5, alarm_timeout=2, **kwargs) as handler:
            handler.run()

    # Then the good task ran, both bad ones were reported with their bodies, and kept for the DLQ
    assert tasks == ["Good"]
    assert sorted(type(exc).__name__ for exc, _ in reports) == ["MalformedMessage", "MalformedMessage"]
    assert all(isinstance(exc, MalformedMessage) and exc.message_id == ctx["message_id"] for exc, ctx in reports)
    assert {ctx["body"] for _, ctx in reports} == {"not json {", '{"kwargs": {}}'}
    assert {m["Body"] for m in drain(sqs_client, make_queue.dead_letter_urls[url])} == \
        {'{"kwargs": {}}', "not json {"}


def test_sqs_url_host_is_the_endpoint_without_any_configuration(make_queue, monkeypatch):
    # A queue URL on a non-AWS host needs no endpoint setting
    url = make_queue()
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    tm = TaskManager(url)
    tm.submit("T", name="n")
    assert tm.attributes()["ApproximateNumberOfMessages"] == "1"
    tm.purge()


def test_aws_endpoint_url_is_honoured(sqs_server, monkeypatch):
    # Given AWS_ENDPOINT_URL pointing at the test server and an AWS-shaped queue URL
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_server.endpoint)
    name = f"aws-{uuid.uuid4().hex[:8]}"
    sqs_server.create_queue(name)
    url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}"
    tm = TaskManager(url)
    tm.submit("T", name="n")
    assert tm.attributes()["ApproximateNumberOfMessages"] == "1"


# -- task_generator(max_messages > 1): the messages it holds unyielded ---------------------------------

def _nothing():
    return contextlib.nullcontext()


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_leaving_task_generator_mid_batch_makes_the_unyielded_messages_visible_at_once(leave, make_queue, sqs_client):
    # Given three tasks, received in one batch of three with a 60 s visibility
    url = make_queue(visibility_timeout=60)
    manager = TaskManager(url)
    for index in range(3):
        manager.submit("T", name=f"t{index}")

    # When the caller leaves the loop after the first (a break, or an exception out of the loop body)
    with pytest.raises(RuntimeError) if leave == "raise" else _nothing():
        for _task, _kwargs, message in manager.task_generator(wait_time=1, sqs_timeout=60, max_messages=3):
            message.delete()
            if leave == "raise":
                raise RuntimeError("the caller's own failure")
            break

    # Then the two it received but never yielded are visible again now, not after 60 s
    assert queue_counts(sqs_client, url)[:2] == (2, 0)
    assert sorted(json.loads(m["Body"])["kwargs"]["name"] for m in drain(sqs_client, url)) == ["t1", "t2"]


def test_task_generator_keeps_a_held_message_from_another_consumer_while_the_first_outlasts_the_visibility(
        make_queue, sqs_client):
    # Given two tasks received in one batch with a 2 s visibility
    url = make_queue(visibility_timeout=2)
    manager = TaskManager(url)
    for index in range(2):
        manager.submit("T", name=f"t{index}")
    generator = manager.task_generator(wait_time=1, sqs_timeout=2, max_messages=2, until_empty=True)
    task, kwargs, first = next(generator)
    first.change_visibility(VisibilityTimeout=60)  # as a MessageHandler's heartbeat keeps the running one

    # When the first task outlasts the batch's visibility (3 s: 1 s past it, on a loaded machine too)
    time.sleep(3)

    # Then another consumer cannot take the second (it is kept hidden: it would run twice)
    assert sqs_client.receive_message(QueueUrl=url, VisibilityTimeout=60).get("Messages", []) == []
    first.delete()
    # And the generator hands it out next, once
    task, kwargs, second = next(generator)
    assert kwargs["name"] == "t1"
    second.delete()
    assert list(generator) == []
