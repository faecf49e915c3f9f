"""Fixtures: a real SQS-compatible server (moto's, over HTTP on 127.0.0.1) and fresh queues."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Iterator

import boto3
import pytest

from sqsmaster import LocalQueue
from sqsmaster.embedded import EmbeddedSQS

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE"):
    os.environ.pop(_variable, None)


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[EmbeddedSQS]:
    """One moto server per test process (each xdist worker has its own)."""
    with EmbeddedSQS() as server:
        yield server


@pytest.fixture
def sqs_client(sqs_server: EmbeddedSQS) -> Any:
    """A plain boto3 client on the test server: the test's own eyes on the queue."""
    client = boto3.client("sqs", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def make_queue(sqs_server: EmbeddedSQS) -> Callable[..., str]:
    """Factory: a fresh, uniquely named queue on the test server; returns its URL.

    ``make_queue(visibility_timeout=2, dead_letter=True, max_receive_count=2)``
    also makes a dead-letter queue, whose URL is in ``make_queue.dead_letter_urls[url]``.
    """
    dead_letter_urls: dict[str, str] = {}

    def factory(visibility_timeout: int = 30, dead_letter: bool = False, max_receive_count: int = 3,
                fifo: bool = False, **attributes: str) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        if fifo:
            attributes["FifoQueue"] = "true"
        dlq = None
        if dead_letter:
            dlq = sqs_server.create_queue(name + "-dlq" + (".fifo" if fifo else ""), **(
                {"FifoQueue": "true"} if fifo else {}))
        url = sqs_server.create_queue(name + (".fifo" if fifo else ""), visibility_timeout=visibility_timeout,
                                      dead_letter_url=dlq, max_receive_count=max_receive_count, **attributes)
        if dlq:
            dead_letter_urls[url] = dlq
        return url

    factory.dead_letter_urls = dead_letter_urls  # type: ignore[attr-defined]
    return factory


@pytest.fixture(autouse=True)
def _fresh_local_queues() -> Iterator[None]:
    LocalQueue.reset()
    yield
    LocalQueue.reset()


@pytest.fixture
def fault_proxy(sqs_server: EmbeddedSQS) -> Iterator[Any]:
    """An HTTP proxy in front of the test server that answers chosen calls with chosen SQS errors
    (codes moto cannot produce); see tests/faultproxy.py."""
    from .faultproxy import FaultProxy

    with FaultProxy(sqs_server.endpoint) as proxy:
        yield proxy


def queue_counts(client: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed) as the server reports them."""
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            int(attributes["ApproximateNumberOfMessagesDelayed"]))


def drain(client: Any, url: str, wait: int = 0) -> list[dict[str, Any]]:
    """Receive (and delete) everything visible now; returns the raw messages."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                       MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def frozen_moto() -> Iterator[tuple[subprocess.Popen, str]]:
    """A moto server in a process of its own, so a test can freeze it (SIGSTOP) and thaw it (SIGCONT):
    a network partition as a client sees it. Yields ``(process, endpoint)``."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        _wait_until(up, 15, "moto_server to listen")
        yield process, endpoint
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()
