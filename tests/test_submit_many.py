"""submit_many: every task arrives exactly once, batches respect SQS's limits, failures are retried or named."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Iterator

import boto3
import pytest
from botocore.stub import Stubber

from sqsmaster import (
    ConfigurationError,
    LocalQueue,
    MessageTooLarge,
    QueueDoesNotExist,
    SubmitFailed,
    TaskCall,
    TaskManager,
)
from sqsmaster.cli import main
from sqsmaster.limits import MAX_BATCH_ENTRIES, MAX_BATCH_SIZE

from .conftest import queue_counts


def receive_all_ids(receive_batch) -> Counter:
    """Receive and delete until empty; count each task's ``i`` (duplicates show as counts > 1)."""
    seen: Counter = Counter()
    while (ids := receive_batch()) is not None:
        seen.update(ids)
    return seen


def test_25000_tasks_from_a_generator_arrive_exactly_once_on_mem():
    # Given a generator of 25,000 tasks (never a list)
    url = "mem://bulk"
    tm = TaskManager(url)
    tasks = (("count", {"i": i}) for i in range(25_000))

    # When they are submitted in one call
    sent = tm.submit_many(tasks)

    # Then every one arrives exactly once
    queue = LocalQueue(url)

    def receive_batch() -> list[int] | None:
        messages = queue.receive(10, 0, 30)
        if not messages:
            return None
        queue.delete_batch([message.receipt_handle for message in messages])
        return [json.loads(message.body)["kwargs"]["i"] for message in messages]

    seen = receive_all_ids(receive_batch)
    assert sent == 25_000
    assert set(seen) == set(range(25_000)) and max(seen.values()) == 1


class ShallowConsumers:
    """Threads that receive and delete as tasks arrive, counting each task's ``i``.

    moto re-scans its queue on every call (a receive at depth 1,000 takes a second), so
    :meth:`paced` holds the producer back while more than ``depth`` tasks wait.
    """

    def __init__(self, client: Any, url: str, threads: int = 2, depth: int = 60) -> None:
        self.client, self.url, self.depth = client, url, depth
        self.seen: Counter = Counter()  # task i -> deliveries
        self.message_ids: dict[int, set[str]] = {}  # task i -> distinct messages carrying it
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._consume) for _ in range(threads)]

    def __enter__(self) -> "ShallowConsumers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join()

    def _consume(self) -> None:
        while not self.done.is_set():
            messages = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1).get("Messages", [])
            if messages:
                self.client.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])
                for message in messages:
                    i = json.loads(message["Body"])["kwargs"]["i"]
                    self.seen[i] += 1
                    self.message_ids.setdefault(i, set()).add(message["MessageId"])

    def paced(self, count: int) -> Iterator[tuple[str, dict[str, int]]]:
        for i in range(count):
            while i - len(self.message_ids) > self.depth:
                time.sleep(0.02)
            yield "count", {"i": i}

    def wait_for(self, count: int, timeout: float = 60) -> dict[int, set[str]]:
        """The distinct message ids per task, once ``count`` tasks were seen (SQS may deliver one twice)."""
        deadline = time.monotonic() + timeout
        while len(self.message_ids) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.message_ids


def test_2000_tasks_arrive_exactly_once_on_moto(make_queue, sqs_server):
    # Given a moto queue and consumers polling it
    url = make_queue(visibility_timeout=120)
    client = boto3.client("sqs", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    with ShallowConsumers(client, url) as consumers:
        # When 2,000 tasks are submitted from a generator
        sent = TaskManager(url).submit_many(consumers.paced(2_000))
        seen = consumers.wait_for(2_000)

    # Then each task was sent exactly once: one distinct message per task
    assert sent == 2_000
    assert set(seen) == set(range(2_000)) and {len(ids) for ids in seen.values()} == {1}


def test_parallel_processes_split_a_sliceable_list(make_queue, sqs_server):
    url = make_queue(visibility_timeout=120)
    client = boto3.client("sqs", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    with ShallowConsumers(client, url) as consumers:
        sent = TaskManager(url).submit_many([TaskCall("count", {"i": i}) for i in range(300)], parallel=2)
        seen = consumers.wait_for(300)
    assert sent == 300
    assert set(seen) == set(range(300)) and {len(ids) for ids in seen.values()} == {1}


def test_batches_are_split_by_size_near_one_mib(make_queue, sqs_client):
    # Given tasks of about 400 KB (two fit in 1 MiB, three do not) between small ones
    url = make_queue()
    client = boto3.client("sqs", endpoint_url=sqs_client.meta.endpoint_url, region_name="us-east-1")
    requests: list[tuple[int, int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        entries = params["Entries"]
        requests.append((len(entries), sum(len(e["MessageBody"].encode()) for e in entries)))

    client.meta.events.register("provide-client-params.sqs.SendMessageBatch", record)
    big = "x" * 400_000
    tasks = [("big", {"blob": big, "i": i}) if i % 3 == 0 else ("small", {"i": i}) for i in range(15)]

    # When they are submitted
    sent = TaskManager(url, client=client).submit_many(tasks)

    # Then every request stays within 10 entries and 1 MiB, and all 15 arrived
    assert sent == 15
    assert all(count <= MAX_BATCH_ENTRIES and size <= MAX_BATCH_SIZE for count, size in requests)
    assert sum(count for count, _ in requests) == 15
    assert len(requests) >= 3  # 5 big tasks need at least 3 requests
    assert queue_counts(sqs_client, url)[0] == 15


def stubbed_manager(responses: list[dict[str, Any]]) -> tuple[TaskManager, Stubber]:
    client = boto3.client("sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
    stubber = Stubber(client)
    for response in responses:
        stubber.add_response("send_message_batch", response)
    stubber.activate()
    return TaskManager("http://127.0.0.1:9/123456789012/q", client=client), stubber


def test_entries_failed_by_a_server_fault_are_retried_and_sender_faults_are_named():
    # Given SQS failing entry 1 (server fault, transient) and entry 2 (sender fault) on the first attempt
    first = {"Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
             "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "try again"},
                        {"Id": "2", "SenderFault": True, "Code": "InvalidParameterValue", "Message": "bad"}]}
    second = {"Successful": [{"Id": "1", "MessageId": "m1", "MD5OfMessageBody": "x"}], "Failed": []}
    tm, stubber = stubbed_manager([first, second])

    # When three tasks are submitted
    with pytest.raises(SubmitFailed) as failure:
        tm.submit_many([("t", {"i": i}) for i in range(3)])

    # Then entry 1 was retried and sent; entry 2 is named in the error, with the count sent
    stubber.assert_no_pending_responses()
    assert failure.value.sent == 2
    assert [(f.index, f.code) for f in failure.value.failed] == [(2, "InvalidParameterValue")]
    assert json.loads(failure.value.failed[0].entry.body) == {"task": "t", "kwargs": {"i": 2}}
    assert "sent 2 task(s)" in str(failure.value) and "1 could not be sent" in str(failure.value)


def test_an_entry_that_keeps_failing_is_given_up_after_the_retries():
    failing = {"Successful": [], "Failed": [{"Id": "0", "SenderFault": False, "Code": "ServiceUnavailable",
                                             "Message": "busy"}]}
    tm, _ = stubbed_manager([failing] * 5)
    with pytest.raises(SubmitFailed, match="1 x ServiceUnavailable") as failure:
        tm.submit_many([("t", {})])
    assert failure.value.sent == 0 and len(failure.value.failed) == 1


def test_a_missing_queue_stops_the_run(sqs_server):
    url = f"{sqs_server.endpoint}/123456789012/no-such-queue"
    with pytest.raises(QueueDoesNotExist):
        TaskManager(url).submit_many(("t", {"i": i}) for i in range(100))


def test_a_bad_task_stops_before_anything_after_it_is_sent():
    # Given a stream whose third task cannot be encoded
    tasks = [("t", {"i": 0}), ("t", {"i": 1}), ("t", {"i": object()}), ("t", {"i": 3})]

    # When it is submitted
    with pytest.raises(TypeError, match="'i'"):
        TaskManager("mem://stops").submit_many(iter(tasks))

    # Then the two before it were sent, and nothing after it
    assert [json.loads(m.body)["kwargs"]["i"] for m in LocalQueue("mem://stops").receive(10)] == [0, 1]


def test_over_the_limit_without_a_bucket_sends_nothing(make_queue, sqs_client):
    url = make_queue()
    with pytest.raises(MessageTooLarge, match="1,048,576") as too_large:
        TaskManager(url).submit_many([("big", {"blob": "x" * 1_100_000})])
    assert too_large.value.size > too_large.value.limit == 1_048_576
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_submit_keeps_kwargs_named_like_options_and_takes_options_through_task():
    # Given kwargs that share the options' names, and a TaskCall with a real delay
    tm = TaskManager("mem://options")
    tm.submit("t", delay_seconds=5, countdown=60, group_id="g")
    tm.submit(TaskCall("later", {"x": 1}, delay_seconds=60))

    # Then the kwargs reach the task untouched (and do not delay it); the TaskCall's option delays it
    queue = LocalQueue("mem://options")
    [message] = queue.receive(10)
    assert json.loads(message.body) == {"task": "t", "kwargs": {"delay_seconds": 5, "countdown": 60, "group_id": "g"}}
    assert queue.get_attributes()["ApproximateNumberOfMessagesDelayed"] == "1"


def test_progress_bar_counts_what_was_sent(capsys):
    sent = TaskManager("mem://progress").submit_many((("t", {"i": i}) for i in range(50)), total=50, progress=True)
    assert sent == 50
    assert "50/50" in capsys.readouterr().err


def test_submit_file_stops_at_a_malformed_line_and_names_it(tmp_path, capsys):
    # Given a file whose third line is not JSON
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task": "a", "kwargs": {"i": 1}}\n{"task": "b", "kwargs": {}}\nnot json\n'
                    '{"task": "c", "kwargs": {}}\n')

    # When it is submitted from the command line
    code = main(["submit-file", "mem://file", str(path), "--no-progress"])

    # Then it stops with the line number; the two lines before it were sent, none after it
    assert code == 2
    assert f"{path}:3" in capsys.readouterr().err
    assert sorted(json.loads(m.body)["task"] for m in LocalQueue("mem://file").receive(10)) == ["a", "b"]


def test_submit_file_reads_stdin(monkeypatch, capsys):
    lines = "".join(json.dumps({"task": "t", "kwargs": {"i": i}}) + "\n" for i in range(25))
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["submit-file", "mem://stdin", "-"]) == 0
    assert "sent 25 task(s)" in capsys.readouterr().out
    assert LocalQueue("mem://stdin").get_attributes()["ApproximateNumberOfMessages"] == "25"


def test_a_request_error_names_every_entry_read_but_not_sent():
    # Given SQS accepting the first batch, then failing the request itself
    ok = {"Successful": [{"Id": str(i), "MessageId": f"m{i}", "MD5OfMessageBody": "x"} for i in range(10)],
          "Failed": []}
    client = boto3.client("sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("send_message_batch", ok)
    stubber.add_client_error("send_message_batch", "InternalError", http_status_code=400)
    stubber.activate()
    tm = TaskManager("http://127.0.0.1:9/123456789012/q", client=client)

    # When 25 tasks are submitted one request at a time
    with pytest.raises(SubmitFailed) as failure:
        tm.submit_many((("t", {"i": i}) for i in range(25)), max_in_flight=1)

    # Then the error says how many were sent, and every other entry read is listed
    assert failure.value.sent == 10 and failure.value.cause is not None
    assert failure.value.sent + len(failure.value.failed) <= 25
    assert {f.index for f in failure.value.failed} >= set(range(10, 20))


def test_submit_many_leaves_no_thread_behind_whether_it_succeeds_or_fails():
    # Given the threads running before
    before = set(threading.enumerate())

    # When one submission succeeds, one meets a bad task, and one a failed request
    TaskManager("mem://threads").submit_many(("t", {"i": i}) for i in range(500))
    with pytest.raises(TypeError):
        TaskManager("mem://threads").submit_many(iter([("t", {"i": 0})] * 30 + [("t", {"i": object()})]))
    client = boto3.client("sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("send_message_batch", "InternalError", http_status_code=500)
    stubber.activate()
    with pytest.raises(SubmitFailed):
        TaskManager("http://127.0.0.1:9/123456789012/q", client=client).submit_many(("t", {}) for _ in range(50))

    # Then every sender thread has ended
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize("form", [lambda blob: ("t", {"b": blob}), lambda blob: TaskCall("t", {"b": blob})],
                         ids=["pair", "TaskCall"])
@pytest.mark.parametrize("char, width", [("x", 1), ("é", 6)], ids=["ascii", "non-ascii"])
def test_a_message_at_the_limit_is_sent_and_one_character_more_is_refused(form, char, width):
    # Given the bytes a message carries besides its blob: the JSON around it and the sender attribute
    from sqsmaster.encoding import encode_task
    from sqsmaster.limits import MAX_MESSAGE_SIZE, message_size
    from sqsmaster.producer import sender_attributes

    around = len(encode_task("t", {"b": ""})) + message_size("", sender_attributes("s", "mem://limit"))
    fits = (MAX_MESSAGE_SIZE - around) // width  # JSON writes "é" as \u00e9: six bytes
    tm = TaskManager("mem://limit", sender_name="s")

    # When a task whose blob just fits is submitted, then one a character longer
    sent = tm.submit_many([form(char * fits)])
    with pytest.raises(MessageTooLarge) as too_large:
        tm.submit_many([form(char * (fits + 1))])

    # Then the first was sent and the second refused, naming its size
    assert sent == 1
    assert too_large.value.size == around + (fits + 1) * width > MAX_MESSAGE_SIZE


def test_requests_in_flight_never_outnumber_the_clients_connection_pool(caplog):
    # Given a client of the user's whose pool keeps 2 connections, and an endpoint 20 ms away
    # (where the window would otherwise climb well past 2)
    from botocore.config import Config

    from .latency_sink import running_sink

    with running_sink(0.02) as endpoint:
        client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                              config=Config(max_pool_connections=2))
        tm = TaskManager(f"{endpoint}/123456789012/q", client=client)

        # When 2,000 tasks are submitted
        with caplog.at_level("WARNING", logger="urllib3"):
            sent = tm.submit_many(("t", {"i": i}) for i in range(2_000))

    # Then all were sent and urllib3 never had to open (and drop) a connection beyond its pool
    assert sent == 2_000
    assert not [record for record in caplog.records if "pool is full" in record.getMessage()]


def test_a_server_frozen_mid_run_delays_the_submission_and_loses_or_doubles_nothing(frozen_moto):
    # Given a moto server in a process of its own, and 600 tasks whose 200th freezes it for 2 s (a partition)
    process, endpoint = frozen_moto
    url = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1").create_queue(
        QueueName="frozen")["QueueUrl"]
    thaw = threading.Timer(2.0, os.kill, (process.pid, signal.SIGCONT))

    def tasks() -> Iterator[tuple[str, dict[str, int]]]:
        for i in range(600):
            if i == 200:
                os.kill(process.pid, signal.SIGSTOP)
                thaw.start()
            yield "count", {"i": i}

    # When they are submitted (the window sees round trips of seconds, then normal ones again)
    try:
        sent = TaskManager(url).submit_many(tasks())
    finally:
        thaw.join()

    # Then every task was sent, once: the queue holds exactly 600 messages
    assert sent == 600
    assert queue_counts(boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1"), url)[0] == 600


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True, None])
def test_a_bad_max_in_flight_is_refused_before_anything_is_read(bad):
    # Given a stream that records what was read
    read: list[int] = []

    def tasks() -> Iterator[tuple[str, dict[str, int]]]:
        for i in range(5):
            read.append(i)
            yield "t", {"i": i}

    # When it is submitted with a max_in_flight that cannot work
    with pytest.raises(ConfigurationError, match="max_in_flight must be an int >= 1"):
        TaskManager("mem://bad-in-flight").submit_many(tasks(), max_in_flight=bad)

    # Then nothing was read, nothing sent
    assert read == [] and LocalQueue("mem://bad-in-flight").receive(10) == []
