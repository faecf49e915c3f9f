"""Every attempt ends in the worker, whatever escapes: failures, dead letters, a log that agrees with the job log."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from sqsmaster import Registry, TaskCall, TaskManager, Worker, delays
from sqsmaster.worker.jobs import JobLog

from .conftest import queue_counts
from .workerkit import bodies, ends, starts, submit, worker_factory

QUICK = ["--sqs-timeout", "4", "--wait-time", "1"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, QUICK)


def test_an_error_escaping_a_handler_fails_that_task_and_the_worker_goes_on(make_queue, sqs_client, worker):
    # Given a handler whose own backoff() raises (the error escapes its with block), one whose notify() raises
    # an interrupt (a BaseException), and a good task, on a queue that dead-letters after 2 receives
    url = make_queue(dead_letter=True, max_receive_count=2)
    dlq = make_queue.dead_letter_urls[url]
    broken = submit(sqs_client, url, "bad_backoff", id="b")
    interrupted = submit(sqs_client, url, "escaping_interrupt", id="i")
    submit(sqs_client, url, "note", id="good")

    # When a worker drains the queue
    run = worker(url, "--until-empty")

    # Then it never stopped: each broken task counted as a failure of its own (run twice, then dead-lettered)
    assert run.wait(timeout=60) == 0, run.stderr
    assert Counter(starts(run.record_path)) == {"b": 2, "i": 2, "good": 1}
    assert len(bodies(sqs_client, dlq)) == 2 and queue_counts(sqs_client, url) == (0, 0, 0)
    # And the log names each failure with its message id
    assert re.search(f"failed message {broken} .*ZeroDivisionError: a bug in backoff()", run.stderr)
    assert f"failed message {interrupted}" in run.stderr


def test_a_bug_of_the_worker_before_the_task_releases_the_message_and_the_loop_goes_on(make_queue, sqs_client):
    # Given a registry with a bug (its lookup raises for one task name) and two messages
    runs: list[str] = []

    class Buggy(Registry):
        def get(self, name: str, message_id: str | None = None):  # noqa: ANN201
            if name == "buggy":
                raise RuntimeError("a bug in the registry")
            return super().get(name, message_id)

    registry = Buggy()
    registry.task(lambda id: runs.append(id), name="note")
    url = make_queue(visibility_timeout=300)
    submit(sqs_client, url, "buggy", id="x")
    submit(sqs_client, url, "note", id="ok")

    # When a worker runs two attempts
    assert Worker(url, registry, sqs_timeout=10, wait_time=1, max_tasks=1).run() == 0

    # Then the good task ran, and the message hit by the bug was handed back (visible again within seconds,
    # not after its 300 s visibility timeout)
    assert runs == ["ok"]
    deadline = time.monotonic() + 10
    while queue_counts(sqs_client, url)[0] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue_counts(sqs_client, url)[0] == 1


def test_the_worker_log_and_the_job_log_agree_on_dead_letters(make_queue, sqs_client, worker, tmp_path):
    # Given a queue that dead-letters after 3 receives, and three ways to end there: a task without a retry
    # policy that always fails, a malformed body, and a task allowed no retry (so it comes back twice after
    # its last attempt before SQS moves it)
    url = make_queue(dead_letter=True, max_receive_count=3)
    ids = {"fail_always": submit(sqs_client, url, "fail_always", id="a"),
           "fail_no_retry": submit(sqs_client, url, "fail_no_retry", id="n"),
           "malformed": sqs_client.send_message(QueueUrl=url, MessageBody="{malformed")["MessageId"]}
    job_log = tmp_path / "jobs.log"

    # When a worker drains the queue into a job log
    run = worker(url, "--until-empty", "--job-log", str(job_log))
    assert run.wait(timeout=60) == 0, run.stderr

    # Then each message has exactly one dead-lettered line, on the attempt the job log records as dead-lettered
    records = JobLog(job_log).records()
    for kind, message_id in ids.items():
        lines = re.findall(f"dead-lettered message {message_id} .*attempt=(\\d)", run.stderr)
        dead = [r.attempt for r in records if r.message_id == message_id and r.outcome == "dead-lettered"]
        assert len(lines) == 1 and dead == [int(lines[0])], (kind, lines, dead)
    assert dead_attempt(records, ids["fail_always"]) == 3 and dead_attempt(records, ids["malformed"]) == 3
    assert dead_attempt(records, ids["fail_no_retry"]) == 1
    # And the receives after its last attempt are only "handed back", with no job record
    assert len(re.findall(f"handed back message {ids['fail_no_retry']}", run.stderr)) == 2
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def dead_attempt(records, message_id):  # noqa: ANN001, ANN201
    return next(r.attempt for r in records if r.message_id == message_id and r.outcome == "dead-lettered")


def test_a_due_time_beyond_a_hold_costs_no_receive_with_max_receive_count_2(make_queue, sqs_client, monkeypatch):
    # Given SQS's limits scaled down (native delays of at most 3 s, "12 hours" of visibility from receipt = 4 s),
    # a queue whose redrive policy moves a message after 2 receives, and a task due in 10 s: beyond one hold.
    # (A held message comes back 3 s before it is due to be re-sent: room for a busy machine's delays.)
    monkeypatch.setattr(delays, "MAX_NATIVE_DELAY", 3)
    monkeypatch.setattr(delays, "MAX_HOP", 4)
    url = make_queue(dead_letter=True, max_receive_count=2)
    dlq = make_queue.dead_letter_urls[url]
    runs: list[tuple[float, str]] = []
    registry = Registry()

    @registry.task
    def later() -> None:
        runs.append((time.time(), "ran"))

    submitted = time.time()
    TaskManager(url).submit(TaskCall("later", {}, countdown=10))
    attempts: list[int] = []

    # When a worker runs until it has run one task
    assert Worker(url, registry, sqs_timeout=10, wait_time=1, max_tasks=1,
                  on_attempt_end=lambda record: attempts.append(record.attempt)).run() == 0

    # Then it ran once, when due, on its first receive: the waiting was holds and re-sends, never a receive
    # the redrive policy counted; and nothing went to the dead-letter queue
    assert [event for _, event in runs] == ["ran"] and runs[0][0] >= submitted + 10
    assert attempts == [1]
    assert bodies(sqs_client, dlq) == []


def test_the_shutdown_summary_counts_the_messages_it_released(make_queue, sqs_client, worker):
    url = make_queue(visibility_timeout=30)
    for index in range(3):
        submit(sqs_client, url, "nap", id=f"t{index}", seconds=1.5)
    run = worker(url, "--prefetch", "2", "--grace", "10")
    deadline = time.monotonic() + 20
    while not starts(run.record_path) and time.monotonic() < deadline:
        time.sleep(0.05)

    run.send_signal(15)

    assert run.wait(timeout=20) == 0, run.stderr
    assert run.stderr.count("(received, not started): visible again now") == 2
    assert "stopped after SIGTERM: 1 task(s) ended, 2 unstarted message(s) released" in run.stderr
    assert len(ends(run.record_path)) == 1


def test_a_rejected_message_is_named_with_its_reason_in_json_logs(make_queue, sqs_client, worker):
    url = make_queue(dead_letter=True, max_receive_count=1)
    bad = sqs_client.send_message(QueueUrl=url, MessageBody="[" * 100_000 + "]" * 100_000)["MessageId"]

    run = worker(url, "--until-empty", "--log-format", "json")

    assert run.wait(timeout=30) == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    [rejected] = [line for line in lines if line.get("event") == "rejected"]
    assert rejected["message_id"] == bad and "deeper than 100 levels" in rejected["reason"]
