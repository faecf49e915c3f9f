"""The worker honours what producers ask for: FIFO order within a prefetched batch, due times, S3 payloads."""

from __future__ import annotations

import time
import uuid

import boto3
import pytest

from sqsmaster import Registry, TaskCall, TaskManager, Worker, delays

from .conftest import queue_counts


@pytest.fixture
def runs():
    return []


@pytest.fixture
def registry(runs):
    registry = Registry()
    failing_once = {"A3"}

    @registry.task
    def step(name: str, blob: str = "") -> None:
        runs.append((name, time.monotonic(), len(blob)))
        if name in failing_once:
            failing_once.discard(name)
            raise RuntimeError(f"{name} fails once")

    return registry


def test_a_prefetching_worker_keeps_each_fifo_groups_order_when_one_fails(make_queue, registry, runs, sqs_client):
    # Given two FIFO groups of five, A3 failing on its first attempt
    url = make_queue(fifo=True)
    TaskManager(url).submit_many(TaskCall("step", {"name": f"{g}{n}"}, group_id=g) for n in range(1, 6) for g in "AB")

    # When a worker that receives ten at a time drains the queue
    assert Worker(url, registry, prefetch=9, sqs_timeout=10, wait_time=1, until_empty=True).run() == 0

    # Then A4 and A5 waited for A3's successful retry, and B kept its order
    assert [name for name, _, _ in runs if name.startswith("A")] == ["A1", "A2", "A3", "A3", "A4", "A5"]
    assert [name for name, _, _ in runs if name.startswith("B")] == ["B1", "B2", "B3", "B4", "B5"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_the_worker_does_not_run_a_countdown_early(make_queue, registry, runs, monkeypatch):
    # Given native delays and hops of 1 s, and a task due in 3 s (beyond the native delay)
    monkeypatch.setattr(delays, "MAX_NATIVE_DELAY", 1)
    monkeypatch.setattr(delays, "MAX_HOP", 1)
    url = make_queue()
    submitted = time.monotonic()
    TaskManager(url).submit(TaskCall("step", {"name": "soon"}, countdown=3))

    # When a worker runs one task
    assert Worker(url, registry, sqs_timeout=10, wait_time=1, max_tasks=1).run() == 0

    # Then it ran once, not before it was due
    assert [name for name, _, _ in runs] == ["soon"]
    assert runs[0][1] - submitted >= 3


def test_the_worker_fetches_an_s3_payload_and_deletes_it_after_success(make_queue, registry, runs, sqs_server,
                                                                       sqs_client):
    # Given a 2 MiB task whose body the producer put in S3
    s3 = boto3.client("s3", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    bucket = f"payloads-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    url = make_queue()
    TaskManager(url, payload_bucket=f"s3://{bucket}/jobs").submit("step", name="big", blob="x" * 2 * 1024 * 1024)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 1

    # When a worker drains the queue
    assert Worker(url, registry, sqs_timeout=10, wait_time=1, until_empty=True).run() == 0

    # Then the task got the whole body, and the object is gone with the message
    assert [(name, size) for name, _, size in runs] == [("big", 2 * 1024 * 1024)]
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert queue_counts(sqs_client, url) == (0, 0, 0)
