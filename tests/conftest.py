"""Fixtures: a real SQS-compatible server (moto's, over HTTP on 127.0.0.1) and fresh queues."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import boto3
import pytest

from sqsmaster import LocalQueue
from sqsmaster.ops.embedded import EmbeddedSQS

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
    os.environ.pop(_variable, None)


@contextlib.contextmanager
def atomic_moto_sqs() -> Iterator[None]:
    """Make moto's SQS calls atomic, as SQS's are.

    moto 5's ReceiveMessage scans and marks messages with no lock: two consumers receiving
    at once (a worker pool, competing consumers) can both get one message, or one of them
    gets a 500 after its messages were marked received (``list.remove(x): x not in list``
    moving a message to a DLQ), and those messages come back with a receive count they
    never had. SQS does neither. So every call that changes messages runs under one lock;
    a long poll waits outside it (polling moto with a zero wait), so consumers still block
    each other only for the length of one scan.
    """
    from moto.sqs.models import SQSBackend

    lock = threading.RLock()
    names = ["send_message", "send_message_batch", "delete_message", "delete_message_batch",
             "change_message_visibility", "change_message_visibility_batch", "purge_queue"]
    originals = {name: getattr(SQSBackend, name) for name in [*names, "receive_message"]}

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(*args, **kwargs)
        return call

    @functools.wraps(originals["receive_message"])
    def receive_message(self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any,
                        **kwargs: Any) -> Any:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with lock:
                received = originals["receive_message"](self, queue_name, count, 0, *args, **kwargs)
            left = deadline - time.monotonic()
            if received or left <= 0:
                return received
            self.get_queue(queue_name).wait_for_messages(min(left, 0.05))
            time.sleep(0.01)  # visible but not receivable (a FIFO group in flight): do not spin

    for name in names:
        setattr(SQSBackend, name, locked(originals[name]))
    SQSBackend.receive_message = receive_message
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(SQSBackend, name, original)


@contextlib.contextmanager
def atomic_moto_dynamodb() -> Iterator[None]:
    """Make moto's DynamoDB writes atomic, as DynamoDB's are.

    moto checks a write's condition and then writes, with no lock, while its server answers
    each request on a thread of its own: two claims racing from two processes could both
    pass ``attribute_not_exists(pk)``. DynamoDB evaluates a condition and writes as one step.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    names = ["put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"]
    originals = {name: getattr(DynamoDBBackend, name) for name in names if hasattr(DynamoDBBackend, name)}

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(*args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, locked(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(DynamoDBBackend, name, original)


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[EmbeddedSQS]:
    """One moto server per test process (each xdist worker has its own), with atomic SQS calls and
    atomic DynamoDB writes; it serves DynamoDB, S3 and ECS on the same endpoint too."""
    with atomic_moto_sqs(), atomic_moto_dynamodb(), EmbeddedSQS() as server:
        yield server


@pytest.fixture
def make_store_url(sqs_server: EmbeddedSQS, tmp_path: Any) -> Iterator[Callable[[str], str]]:
    """Factory: the URL of a fresh job store of a kind, ``"sqlite"`` (a file under tmp_path) or
    ``"dynamodb"`` (a new table on the test server, made by the first ``open_store``, dropped after the test)."""
    tables: list[str] = []

    def factory(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path}/jobs-{uuid.uuid4().hex[:8]}.db"
        tables.append(f"jobs-{uuid.uuid4().hex[:12]}")
        return f"dynamodb://{tables[-1]}?endpoint={sqs_server.endpoint}&region=us-east-1"

    yield factory
    if tables:
        client = boto3.client("dynamodb", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
        for table in tables:
            with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                client.delete_table(TableName=table)
        client.close()


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


@pytest.fixture
def bucket(sqs_server) -> tuple[Any, str]:
    """A fresh bucket on the same moto server (it serves S3 too) and an S3 client on it."""
    s3 = boto3.client("s3", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    name = f"payloads-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return s3, name


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
