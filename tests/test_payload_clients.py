"""One S3 client per consumer, not one per message: a client costs tens of milliseconds of CPU and a
connection of its own (the request bill's "anything else the count shows").

What a user pays for is counted where boto3 makes S3 clients (``boto3.client("s3", ...)``, which still
makes a real client: every fetch and delete goes to the moto server over HTTP).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from sqsmaster import Registry, TaskManager, Worker

from .conftest import queue_counts


@pytest.fixture
def s3_clients_made(monkeypatch) -> list[str]:
    """The services of the boto3 clients made from now on whose service is S3 (one entry per client)."""
    made: list[str] = []
    real = boto3.client

    def counting(service_name: str, *args: Any, **kwargs: Any) -> Any:
        if service_name == "s3":
            made.append(service_name)
        return real(service_name, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting)
    return made


def submit_large(url: str, s3: Any, bucket: str, names: list[str]) -> None:
    """Tasks whose bodies go to S3 (a 1,000-byte threshold), the producer's client given."""
    producer = TaskManager(url, payload_bucket=f"s3://{bucket}", payload_threshold=1000, payload_client=s3)
    for name in names:
        producer.submit("step", name=name, blob="x" * 5000)


def test_task_generator_makes_one_s3_client_for_all_its_messages(make_queue, bucket, sqs_client, s3_clients_made):
    # Given three tasks whose bodies are in S3, and a consumer that was given no payload client
    s3, name = bucket
    url = make_queue()
    submit_large(url, s3, name, ["a", "b", "c"])
    consumer = TaskManager(url)

    # When it works them all
    seen = []
    for _task, kwargs, message in consumer.task_generator(wait_time=1, sqs_timeout=10, max_messages=10,
                                                          until_empty=True):
        seen.append((kwargs["name"], len(kwargs["blob"])))
        message.delete()

    # Then each task got its whole body, each object was deleted with its message, with one S3 client for all
    assert sorted(seen) == [("a", 5000), ("b", 5000), ("c", 5000)]
    assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0
    assert s3_clients_made == ["s3"]


def test_a_worker_makes_one_s3_client_for_all_its_queues_and_messages(make_queue, bucket, sqs_client,
                                                                      s3_clients_made):
    # Given two priority queues on one endpoint, each with two tasks whose bodies are in S3
    s3, name = bucket
    urls = [make_queue(), make_queue()]
    for index, url in enumerate(urls):
        submit_large(url, s3, name, [f"q{index}-0", f"q{index}-1"])
    runs: list[tuple[str, int]] = []
    registry = Registry()

    @registry.task
    def step(name: str, blob: str = "") -> None:
        runs.append((name, len(blob)))

    # When a worker drains both
    assert Worker(urls, registry, sqs_timeout=10, wait_time=1, until_empty=True).run() == 0

    # Then it ran all four with their whole bodies (the first queue first), deleted every object, and made one
    # S3 client
    assert runs == [("q0-0", 5000), ("q0-1", 5000), ("q1-0", 5000), ("q1-1", 5000)]
    assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0
    assert [queue_counts(sqs_client, url) for url in urls] == [(0, 0, 0), (0, 0, 0)]
    assert s3_clients_made == ["s3"]
