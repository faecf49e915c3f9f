"""FIFO lanes and unique tasks, delays past 15 minutes, payloads over the SQS limit."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from sqsmaster import MessageHandler, TaskCall, TaskManager, delays

from .conftest import queue_counts


class Recorder(MessageHandler):
    """Records (task id, attempt) in run order; fails the ids listed in ``fail_once`` on their first attempt."""

    ran: list[str] = []
    fail_once: set[str] = set()

    def run(self) -> None:
        name = self.kwargs["name"]
        Recorder.ran.append(name)
        if name in Recorder.fail_once:
            Recorder.fail_once.discard(name)
            raise RuntimeError(f"{name} fails once")


@pytest.fixture(autouse=True)
def _reset_recorder():
    Recorder.ran, Recorder.fail_once = [], set()


def consume(tm: TaskManager, *, max_messages: int = 10, deadline: float = 20, wait_time: int = 1) -> None:
    end = time.monotonic() + deadline
    for _task, kwargs, message in tm.task_generator(wait_time=wait_time, sqs_timeout=10, max_messages=max_messages,
                                                    until_empty=True):
        with Recorder(message, sqs_timeout=10, alarm_timeout=5, hard_timeout=30, **kwargs) as handler:
            handler.run()
        if time.monotonic() > end:
            break


def test_fifo_keeps_each_groups_order_when_a_message_in_the_middle_fails(make_queue):
    # Given two groups of five tasks on a FIFO queue, and A3 failing on its first attempt
    url = make_queue(fifo=True)
    tm = TaskManager(url)
    tasks = [TaskCall("step", {"name": f"{group}{n}"}, group_id=group) for n in range(1, 6) for group in "AB"]
    assert tm.submit_many(tasks) == 10
    Recorder.fail_once = {"A3"}

    # When a consumer receives ten at a time until the queue is empty
    consume(tm)

    # Then group A ran in order, A3 twice, and A4 never before A3's successful run; B in order too
    runs_a = [name for name in Recorder.ran if name.startswith("A")]
    assert runs_a == ["A1", "A2", "A3", "A3", "A4", "A5"]
    assert [name for name in Recorder.ran if name.startswith("B")] == ["B1", "B2", "B3", "B4", "B5"]
    assert tm.attributes()["ApproximateNumberOfMessages"] == "0"


def test_group_id_defaults_to_the_task_name_and_deduplication_id_makes_unique_tasks(make_queue, sqs_client):
    # Given a FIFO queue
    url = make_queue(fifo=True)
    tm = TaskManager(url)

    # When the same unique task is submitted twice, and two plain tasks without ids
    key = uuid.uuid4().hex
    tm.submit(TaskCall("report", {"name": "r"}, deduplication_id=key))
    tm.submit(TaskCall("report", {"name": "r"}, deduplication_id=key))
    tm.submit("plain", name="p")
    tm.submit("plain", name="p")

    # Then the unique task is queued once, each plain one is kept, and groups are the task names
    messages = sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          MessageSystemAttributeNames=["All"])["Messages"]
    groups = sorted(message["Attributes"]["MessageGroupId"] for message in messages)
    assert groups == ["plain", "plain", "report"]


@pytest.fixture
def short_hops(monkeypatch):
    """Native delays and hops of 1 s instead of 900 s and 12 h, so a long countdown can be watched."""
    monkeypatch.setattr(delays, "MAX_NATIVE_DELAY", 1)
    monkeypatch.setattr(delays, "MAX_HOP", 1)


def test_a_30_minute_countdown_is_not_run_early_and_the_consumer_does_not_spin(make_queue, short_hops,
                                                                                sqs_client):
    # Given a task due in 30 minutes and one due in 3 seconds (both beyond the 1 s native delay)
    url = make_queue()
    tm = TaskManager(url)
    start = time.monotonic()
    tm.submit(TaskCall("later", {"name": "in 30 minutes"}, countdown=30 * 60))
    tm.submit(TaskCall("soon", {"name": "in 3 s"}, countdown=3))
    receives: list[float] = []
    tm.queue.client.meta.events.register("before-call.sqs.ReceiveMessage",
                                         lambda **_: receives.append(time.monotonic()))

    # When a consumer polls until the first task runs
    for _task, kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=10, max_messages=10):
        ran, ran_at = kwargs["name"], time.monotonic() - start
        message.delete()
        break

    # Then the 3-second task ran first, not before its time; the other is still waiting in the queue;
    # the consumer received a few times (one hop per second), it did not spin
    assert ran == "in 3 s" and ran_at >= 3
    assert sum(queue_counts(sqs_client, url)) == 1
    assert len(receives) <= 3 * ran_at + 2


def test_eta_past_the_native_delay_runs_when_due(make_queue, short_hops):
    import datetime

    url = make_queue()
    tm = TaskManager(url)
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2.5)
    tm.submit(TaskCall("at", {"name": "eta"}, eta=eta))
    for _task, _kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=10):
        assert datetime.datetime.now(datetime.timezone.utc) >= eta
        message.delete()
        break


def objects(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_3_mib_payload_round_trips_through_s3_and_is_deleted_after_success(make_queue, bucket, sqs_client):
    # Given a queue whose producer offloads large bodies to S3 (the S3 client comes from the queue's endpoint)
    s3, name = bucket
    url = make_queue()
    tm = TaskManager(url, payload_bucket=f"s3://{name}/big")
    blob = "ü" * (3 * 1024 * 1024 // 2)  # 3 MiB of UTF-8

    # When a 3 MiB task is submitted
    tm.submit("crunch", name="big", blob=blob)

    # Then SQS holds a small pointer and S3 the body
    raw = sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0)["Messages"][0]
    assert len(raw["Body"]) < 1000 and raw["MessageAttributes"]["ExtendedPayloadSize"]["DataType"] == "Number"
    assert [key.split("/")[0] for key in objects(s3, name)] == ["big"]

    # And a consumer gets the whole body; after success the object is deleted
    received = []
    for _task, kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=10, until_empty=True):
        with Recorder(message, sqs_timeout=10, alarm_timeout=5, **kwargs) as handler:
            handler.run()
        received.append(kwargs["blob"])
    assert received == [blob]
    assert objects(s3, name) == []
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_a_failed_task_keeps_its_payload_for_the_retry(make_queue, bucket):
    s3, name = bucket
    url = make_queue()
    tm = TaskManager(url, payload_bucket=f"s3://{name}", payload_threshold=1000, payload_client=s3)
    tm.submit_many([("crunch", {"name": "big", "blob": "x" * 5000}), ("crunch", {"name": "small"})])
    assert len(objects(s3, name)) == 1  # only the body over the threshold
    Recorder.fail_once = {"big"}
    consume(tm)
    assert sorted(Recorder.ran) == ["big", "big", "small"]
    assert objects(s3, name) == []
