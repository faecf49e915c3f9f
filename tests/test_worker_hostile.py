"""Hostile messages against real ``sqsmaster worker`` processes: the worker never exits, good tasks run once,
every bad message reaches the dead-letter queue, and the log names every one of them."""

from __future__ import annotations

import json
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from sqsmaster import open_queue
from sqsmaster.backends import SendEntry
from sqsmaster.delays import DUE_ATTRIBUTE
from sqsmaster.payloads import POINTER_CLASS, SIZE_ATTRIBUTE
from sqsmaster.worker.jobs import JobLog

from .conftest import queue_counts
from .workerkit import WorkerRun, ends, starts

Attributes = dict[str, dict[str, Any]]
POINTER_SIZE: Attributes = {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": "1000"}}
GOOD = '{"task": "note", "kwargs": {"id": "x"}}'  # a good body, made bad by its due-time attribute


def due(data_type: str, value: Any) -> Attributes:
    key = "BinaryValue" if data_type == "Binary" else "StringValue"
    return {DUE_ATTRIBUTE: {"DataType": data_type, key: value}}


def pointer(bucket: Any = "b", key: Any = "k") -> str:
    return json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}])


#: Messages no worker may run, and none may break. Each is valid for SQS to carry.
HOSTILE: list[tuple[str, Attributes]] = [
    # not JSON, or JSON that is not an object
    ("{not json", {}), ("  ", {}), ("null", {}), ("[]", {}), ("42", {}), ('"a string"', {}), ("true", {}),
    ('{"task": "note", "kwargs": {"id": "x"}} trailing', {}), ("\ufeff" + GOOD, {}),
    # missing or mistyped task / kwargs, kwargs that fit no call
    ('{"kwargs": {}}', {}), ('{"task": "note"}', {}), ('{"task": 5, "kwargs": {}}', {}),
    ('{"task": null, "kwargs": {}}', {}), ('{"task": ["note"], "kwargs": {}}', {}),
    ('{"task": "note", "kwargs": []}', {}), ('{"task": "note", "kwargs": "id=1"}', {}),
    ('{"task": "note", "kwargs": null}', {}), ('{"task": "note", "kwargs": {}}', {}),
    ('{"task": "note", "kwargs": {"id": "x", "extra": 1}}', {}),
    # unknown tasks
    ('{"task": "no_such_task", "kwargs": {}}', {}), ('{"task": "", "kwargs": {}}', {}),
    ('{"task": "note ", "kwargs": {"id": "x"}}', {}),
    # deep nesting (100,000 nested arrays is 200 KB), numbers JSON or Python cannot hold
    ("[" * 100_000 + "]" * 100_000, {}), ('{"a":' * 40_000 + "1" + "}" * 40_000, {}),
    ('{"task": "note", "kwargs": {"id": ' + "[" * 500 + "]" * 500 + "}}", {}),
    ('{"task": "note", "kwargs": {"id": NaN}}', {}), ('{"task": "note", "kwargs": {"id": Infinity}}', {}),
    ('{"task": "note", "kwargs": {"id": 1e999}}', {}), ('{"task": "note", "kwargs": {"id": 1' + "0" * 5000 + "}}", {}),
    # odd unicode: lone surrogates escaped in JSON (SQS refuses them raw)
    ('{"task": "note", "kwargs": {"id": "\\ud800"}}', {}), ('{"task": "note\\udfff", "kwargs": {}}', {}),
    # 250 KiB bodies
    ("x" * 256_000, {}), ("[" + "1," * 127_999 + "1]", {}),
    ('{"task": "no_such_task", "kwargs": {"blob": "' + "y" * 255_000 + '"}}', {}),
    ('{"task": "' + "z" * 255_000 + '", "kwargs": {}}', {}),
    # due-time attributes that are no time
    (GOOD, due("Number", "nan")), (GOOD, due("Number", "inf")), (GOOD, due("Number", "-inf")),
    (GOOD, due("String", "tomorrow")), (GOOD, due("Binary", b"\x00\x01")), (GOOD, due("Number", "1e999")),
    # S3 payload pointers, malformed or to a bucket that does not exist
    (pointer("no-such-bucket-" + uuid.uuid4().hex[:8]), POINTER_SIZE), (json.dumps([POINTER_CLASS, {}]), POINTER_SIZE),
    (pointer(5, []), POINTER_SIZE), (pointer("", "k"), POINTER_SIZE), (pointer("b", ""), POINTER_SIZE),
    (json.dumps([POINTER_CLASS, "x"]), POINTER_SIZE), ("[" * 50_000 + "]" * 50_000, POINTER_SIZE),
]


def send_all(client: Any, url: str, bad: int, good: int, seed: int = 10) -> tuple[dict[str, str], list[str]]:
    """Send ``bad`` hostile messages (the kinds above, round robin) among ``good`` note tasks, shuffled;
    returns ({bad message id: kind}, good task ids)."""
    items = [("bad", HOSTILE[i % len(HOSTILE)], i % len(HOSTILE)) for i in range(bad)]
    items += [("good", (json.dumps({"task": "note", "kwargs": {"id": f"g{i}"}}), {}), i) for i in range(good)]
    random.Random(seed).shuffle(items)
    bad_ids: dict[str, str] = {}
    for kind, (body, attributes), index in items:
        params: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        if attributes:
            params["MessageAttributes"] = attributes
        message_id = client.send_message(**params)["MessageId"]
        if kind == "bad":
            bad_ids[message_id] = f"hostile #{index}"
    return bad_ids, [f"g{i}" for i in range(good)]


def dlq_ids(client: Any, url: str) -> set[str]:
    found: set[str] = set()
    while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                          VisibilityTimeout=60).get("Messages", []):
        found |= {message["MessageId"] for message in batch}
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~20 s on a quiet machine; several times that on a loaded shared 2-core one
def test_200_hostile_messages_among_100_good_tasks_never_break_a_pool_of_two(make_queue, sqs_client, tmp_path):
    # Given a queue whose redrive policy moves a message after 2 receives, with 200 hostile messages (every
    # kind above) shuffled among 100 good tasks, sent with raw boto3. (Not after 1: on a loaded machine a
    # receive can time out after the server counted it, so a good message may need a second receive, as on SQS.)
    url = make_queue(dead_letter=True, max_receive_count=2)
    dlq = make_queue.dead_letter_urls[url]
    bad, good = send_all(sqs_client, url, bad=200, good=100)
    job_log = tmp_path / "jobs.log"

    # When a pool of two worker processes drains the queue
    run = WorkerRun(url, ["--concurrency", "2", "--until-empty", "--wait-time", "1", "--prefetch", "9",
                          "--sqs-timeout", "10", "--job-log", str(job_log)], tmp_path / "records.jsonl")
    code = run.wait(timeout=240)  # moto scans the whole queue on every call, and the machine may be busy
    log = run.stderr

    # Then no worker process died or was replaced, and the pool exited cleanly
    assert code == 0, log
    assert len(set(re.findall(r"worker ready \(pid (\d+)\)", log))) == 2, log
    # And every good task ran exactly once
    assert sorted(starts(run.record_path)) == sorted(good) and sorted(ends(run.record_path)) == sorted(good)
    # And every bad message is in the dead-letter queue, and nothing is left behind
    assert dlq_ids(sqs_client, dlq) == set(bad)
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    # And the log names every bad message on a "rejected" line, and dead-letters each one once (as the job log)
    for message_id, kind in bad.items():
        assert f"rejected message {message_id}" in log, f"{kind} ({message_id}) is not named in the log"
        assert log.count(f"dead-lettered message {message_id}") == 1, f"{kind} ({message_id})"
    dead = [record.message_id for record in JobLog(job_log).records() if record.outcome == "dead-lettered"]
    assert sorted(dead) == sorted(bad)
    # And no line repeats a 250 KiB body or task name: each reason is cut short
    assert max(len(line) for line in log.splitlines()) < 2000


@pytest.fixture(params=["sqlite", "fq"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A durable queue that moves a message to its dead-letter queue on the receive after the first."""
    if request.param == "sqlite":
        return (f"sqlite://{tmp_path}/q.db?queue=jobs&max_receive_count=1&dead_letter=jobs-dlq",
                f"sqlite://{tmp_path}/q.db?queue=jobs-dlq")
    return f"fq://{tmp_path}/jobs?max_receive_count=1&dead_letter={tmp_path}/dlq", f"fq://{tmp_path}/dlq"


#: What a local queue carries that SQS would refuse: raw U+0000 and other control characters.
RAW: list[tuple[str, Attributes]] = [
    ("\x00", {}), ('{"task": "note", "kwargs": {"id": "a\x00b"}}', {}), ('{"task": "note\x01", "kwargs": {}}', {}),
    ("\x00" * 1000, {}), ('{"task":\x00"note", "kwargs": {}}', {}),
]


def test_hostile_messages_on_a_durable_local_queue_go_to_its_dead_letter_queue(durable, tmp_path):
    # Given every hostile kind above but S3 pointers to real buckets (no S3 here) and binary attributes (a local
    # queue keeps text), raw control characters a local queue can carry, and good tasks
    url, dlq_url = durable
    queue = open_queue(url)
    kinds = [(body, attributes) for body, attributes in HOSTILE
             if not body.startswith(f'["{POINTER_CLASS}", {{"s3BucketName": "no-such')
             and not any("BinaryValue" in attribute for attribute in attributes.values())]
    bad = {queue.send(SendEntry(body, attributes))["MessageId"] for body, attributes in kinds + RAW}
    for i in range(10):
        queue.send(SendEntry(json.dumps({"task": "note", "kwargs": {"id": f"g{i}"}})))

    # When a worker drains the queue
    run = WorkerRun(url, ["--until-empty", "--wait-time", "1", "--prefetch", "9", "--sqs-timeout", "20"],
                    tmp_path / "records.jsonl")
    assert run.wait(timeout=60) == 0, run.stderr

    # Then the good tasks ran once each, every bad message sits in the dead-letter queue, each named in the log
    assert sorted(ends(run.record_path)) == sorted(f"g{i}" for i in range(10))
    dead_letters, moved = open_queue(dlq_url), set()
    while batch := dead_letters.receive(10, 0, 60):
        moved |= {message.message_id for message in batch}
    assert moved == bad
    assert all(f"rejected message {message_id}" in run.stderr for message_id in bad)
