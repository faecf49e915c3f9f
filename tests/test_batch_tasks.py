"""Batch tasks: ``@task(batch=25)`` hands many messages of a task to one call; success deletes them all, a
failure hands them all back. Real worker processes, on moto over HTTP and on a sqlite:// queue."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from sqsmaster import ConfigurationError, MessageHandler, Registry, TaskManager

from .conftest import queue_counts
from .workerkit import records, wait_for, worker_factory

FAST = ["--tasks", "tests.batch_tasks", "--sqs-timeout", "6", "--wait-time", "1"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, FAST)


@pytest.fixture(params=["moto", "sqlite"])
def queue_url(request, tmp_path):
    """A fresh queue: on the moto server over HTTP, or a sqlite:// file."""
    if request.param == "moto":
        return request.getfixturevalue("make_queue")()
    return f"sqlite:///{tmp_path}/queue.db?queue=rows"


def remaining(url: str) -> int:
    """Messages still in the queue (visible, in flight or delayed), as the queue reports them."""
    attributes = TaskManager(url).attributes()
    return sum(int(attributes.get(name, 0)) for name in (
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))


def batches(tmp_path) -> list[list[int]]:
    return [line["ids"] for line in records(tmp_path / "records.jsonl") if line["event"] == "batch"]


def test_a_hundred_messages_in_batches_of_25_make_four_calls_and_are_all_deleted(queue_url, worker, tmp_path):
    # Given 100 messages of a batch task (batch=25)
    assert TaskManager(queue_url).submit_many(("insert_rows", {"id": n}) for n in range(100)) == 100
    # When a worker drains the queue
    run = worker(queue_url, "--until-empty")
    assert run.wait(60) == 0, run.stderr
    # Then the function was called four times with 25 kwargs each, every message once, and all were deleted
    calls = batches(tmp_path)
    assert [len(call) for call in calls] == [25, 25, 25, 25], run.stderr
    assert sorted(n for call in calls for n in call) == list(range(100))
    assert remaining(queue_url) == 0


def test_a_failing_batch_hands_every_message_back(queue_url, worker, tmp_path):
    # Given 10 messages of a batch task that raises
    TaskManager(queue_url).submit_many(("failing_rows", {"id": n}) for n in range(10))
    # When a worker runs one batch (--max-tasks counts each message of it) and stops
    run = worker(queue_url, "--max-tasks", "10")
    assert run.wait(60) == 0, run.stderr
    # Then the one call got all ten, and all ten are still in the queue, each handed back for a retry
    assert [sorted(call) for call in batches(tmp_path)] == [list(range(10))]
    assert remaining(queue_url) == 10
    log = run.stderr
    assert log.count("retry scheduled") == 1 and log.count("batch_of=") == 9, log


def test_a_batch_past_its_hard_timeout_hands_every_message_back(make_queue, sqs_client, worker, tmp_path):
    url = make_queue()
    TaskManager(url).submit_many(("stuck_rows", {"id": n}) for n in range(3))
    run = worker(url, "--max-tasks", "3")
    assert run.wait(60) == 0, run.stderr
    assert [sorted(call) for call in batches(tmp_path)] == [[0, 1, 2]]
    assert sum(queue_counts(sqs_client, url)) == 3
    assert run.stderr.count("timed out") >= 3, run.stderr


def test_every_message_of_a_running_batch_stays_hidden_past_its_visibility_timeout(make_queue, sqs_client, worker,
                                                                                tmp_path):
    # Given three messages of a batch task whose call runs 8 s, on a worker whose visibility timeout is 3 s
    url = make_queue()
    TaskManager(url).submit_many(("slow_rows", {"id": n, "seconds": 8}) for n in range(3))
    run = worker(url, "--max-tasks", "3", "--sqs-timeout", "3")
    wait_for(lambda: batches(tmp_path), 30, "the batch to start")
    # When another consumer keeps receiving while the call runs
    stolen = []
    while run.process.poll() is None:
        stolen += sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                             VisibilityTimeout=0).get("Messages", [])
    # Then it never got one (each lease was extended), and the worker deleted all three
    assert run.wait(30) == 0, run.stderr
    assert stolen == [] and batches(tmp_path) == [[0, 1, 2]]
    assert sum(queue_counts(sqs_client, url)) == 0


def test_a_stop_signal_while_a_batch_gathers_runs_no_call_and_releases_every_message(make_queue, sqs_client, worker,
                                                                                     tmp_path):
    # Given a producer sending a batch task's message every 0.2 s, so the worker's gathering goes on (its
    # receives keep bringing messages, for up to half the 6 s visibility)
    url = make_queue(visibility_timeout=30)
    manager, stop = TaskManager(url), threading.Event()

    def produce() -> None:
        for n in range(100):
            if stop.is_set():
                return
            manager.submit("insert_rows", id=n)
            time.sleep(0.2)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        run = worker(url)
        wait_for(lambda: run.stderr.count("received message") >= 4, 20, "the worker to gather a batch")
        # When SIGTERM comes while it gathers
        signalled = time.time()
        run.send_signal(signal.SIGTERM)
        code = run.wait(30)
    finally:
        stop.set()
        producer.join()
    # Then no call starts after the signal (on a loaded machine a receive may come back empty before it, and
    # a call run then is fine): every message it received and did not run is released unrun, visible at once
    assert code == 0, run.stderr
    calls = [line for line in records(tmp_path / "records.jsonl") if line["event"] == "batch"]
    assert [call["ids"] for call in calls if call["at"] >= signalled] == [], run.stderr
    assert queue_counts(sqs_client, url)[1] == 0, run.stderr


def test_messages_of_other_tasks_received_while_gathering_still_run(make_queue, worker, tmp_path):
    # Given batch-task messages interleaved with messages of a plain task
    url = make_queue()
    manager = TaskManager(url)
    for n in range(6):
        manager.submit("insert_rows", id=n)
        manager.submit("note", id=f"plain-{n}")
    run = worker(url, "--until-empty", "--tasks", "tests.worker_tasks")
    assert run.wait(60) == 0, run.stderr
    # Then every plain task ran once and every batch message was in exactly one call
    lines = records(tmp_path / "records.jsonl")
    assert sorted(line["id"] for line in lines if line["event"] == "start") == [f"plain-{n}" for n in range(6)]
    assert sorted(n for call in batches(tmp_path) for n in call) == list(range(6))
    assert remaining(url) == 0


@pytest.mark.parametrize("options, problem", [
    ({"batch": 0}, "batch must be an integer from 1 to 1000"),
    ({"batch": 2.5}, "batch must be an integer"),
    ({"batch_wait": 1}, "batch_wait= needs batch=N"),
    ({"batch": 5, "batch_wait": 600}, "batch_wait must be from 0 to 60"),
])
def test_bad_batch_options_are_refused_with_a_clear_error(options, problem):
    with pytest.raises(ConfigurationError, match=problem):
        Registry().register(lambda batch: None, "rows", **options)


def test_a_handler_class_cannot_be_a_batch_task():
    class Rows(MessageHandler):
        def run(self) -> None: ...

    with pytest.raises(ConfigurationError, match="batch= takes a function"):
        Registry().register(Rows, batch=5)


def test_in_eager_mode_a_batch_task_gets_a_batch_of_one():
    tasks, seen = Registry(), []
    tasks.register(seen.append, "rows", batch=25)
    TaskManager("mem://eager", eager=True, tasks=tasks).submit("rows", id=7)
    assert seen == [[{"id": 7}]]
    assert json.dumps(seen)


def test_observers_see_every_message_of_a_batch_start_and_end():
    from sqsmaster import Worker
    from sqsmaster.worker.events import WorkerEvents

    # Given a batch task on a mem:// queue and an observer of the worker
    tasks, calls = Registry(), []
    tasks.register(calls.append, "rows", batch=5)
    started, ended = [], []

    class Recorder(WorkerEvents):
        def attempt_started(self, start) -> None:
            started.append(start.message_id)

        def attempt_ended(self, record) -> None:
            ended.append((record.message_id, str(record.outcome)))

    ids = [TaskManager("mem://batch-observed").submit("rows", id=n)["MessageId"] for n in range(5)]
    # When a worker drains it
    code = Worker("mem://batch-observed", tasks, until_empty=True, wait_time=0, sqs_timeout=4,
                  observers=[Recorder]).run()
    # Then one call took the five, and the observer saw each message start and succeed
    assert code == 0 and [len(call) for call in calls] == [5]
    assert sorted(started) == sorted(ids)
    assert sorted(ended) == sorted((i, "succeeded") for i in ids)
