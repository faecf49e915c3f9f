"""The benchmark's instruments: the counting proxy counts what a client sends, the latency sink answers like SQS.

The request-bill and latency tables in the README are only as right as these two.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from botocore.config import Config

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from proxy import CountingProxy  # noqa: E402

from .latency_sink import running_sink  # noqa: E402


def client_for(endpoint: str) -> object:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(max_pool_connections=8, retries={"max_attempts": 1}))


def test_the_proxy_counts_each_request_under_its_queue_and_action(make_queue, sqs_server):
    # Given two queues on moto, reached through the counting proxy
    first, second = make_queue(), make_queue()
    with CountingProxy(int(sqs_server.endpoint.rsplit(":", 1)[1])) as proxy:
        sqs = client_for(proxy.endpoint)
        url = first.replace(sqs_server.endpoint, proxy.endpoint)

        # When a client sends two batches and a message of 100 KiB to one, and receives from the other
        for _ in range(2):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(10)])
        sqs.send_message(QueueUrl=url, MessageBody="y" * 100 * 1024)
        received = sqs.receive_message(QueueUrl=second.replace(sqs_server.endpoint, proxy.endpoint))
        counts, billed = proxy.counts(), proxy.billed()

    # Then each request is counted once, under its queue and action; the 100 KiB one bills as two
    first_name, second_name = first.rsplit("/", 1)[-1], second.rsplit("/", 1)[-1]
    assert "Messages" not in received
    assert counts == {(first_name, "SendMessageBatch"): 2, (first_name, "SendMessage"): 1,
                      (second_name, "ReceiveMessage"): 1}
    assert billed[(first_name, "SendMessage")] == 2 and billed[(first_name, "SendMessageBatch")] == 2


@pytest.fixture
def sink() -> Iterator[str]:
    """The latency sink answering after 50 ms; yields its endpoint."""
    with running_sink(0.05) as endpoint:
        yield endpoint


def test_the_sink_answers_every_entry_as_sent_after_its_delay(sink):
    # Given the sink, and 8 requests sent at once from 8 threads
    from concurrent.futures import ThreadPoolExecutor

    sqs = client_for(sink)
    url = sqs.get_queue_url(QueueName="anything")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "warm", "MessageBody": "x"}])  # connect first

    def send(n: int) -> tuple[float, dict]:
        started = time.monotonic()
        answer = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"{n}-{i}", "MessageBody": "é" * i}
                                                               for i in range(10)])
        return time.monotonic() - started, answer

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))

    # Then every entry is answered as sent, none sooner than the delay (a lower bound holds on a busy machine)
    assert url.endswith("/anything")
    assert all(sorted(e["Id"] for e in answer["Successful"]) == sorted(f"{n}-{i}" for i in range(10))
               and answer["Failed"] == [] for n, (_, answer) in enumerate(results))
    assert min(elapsed for elapsed, _ in results) >= 0.05
