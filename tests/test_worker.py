"""``sqsmaster worker`` as users run it: real worker processes against the test server over HTTP."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sqsmaster.supervise import isolation_modes

from .conftest import queue_counts
from .workerkit import bodies, ends, records, starts, submit, wait_for, worker_factory

FAST = ["--sqs-timeout", "4", "--wait-time", "1"]


@pytest.fixture
def worker(tmp_path):
    """Factory: start ``sqsmaster worker URL --tasks tests.worker_tasks ARGS``; killed at the end if still alive."""
    yield from worker_factory(tmp_path, FAST)


def test_until_empty_runs_every_registered_task_exactly_once_and_logs_json(make_queue, sqs_client, worker):
    # Given function tasks and a MessageHandler-subclass task on a queue
    url = make_queue()
    for index in range(4):
        submit(sqs_client, url, "note", id=f"n{index}")
    submit(sqs_client, url, "handler_task", id="h")
    submit(sqs_client, url, "nap", id="z", seconds=0.2)

    # When a worker runs until the queue is empty, logging JSON
    run = worker(url, "--until-empty", "--log-format", "json")
    code = run.wait()

    # Then each ran once, to the end, the queue is empty and the worker exited 0
    assert code == 0, run.stderr
    assert sorted(starts(run.record_path)) == ["h", "n0", "n1", "n2", "n3", "z"]
    assert sorted(ends(run.record_path)) == ["h", "n0", "n1", "n2", "n3", "z"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    # And every log line is JSON; each message has received, started and succeeded events with its id
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    succeeded = [line for line in lines if line.get("event") == "succeeded"]
    assert len(succeeded) == 6
    assert {line["task"] for line in succeeded} == {"note", "handler_task", "nap"}
    assert all(line["attempt"] == 1 and line["runtime"] >= 0 and line["message_id"] for line in succeeded)
    assert sum(line.get("event") == "started" for line in lines) == 6


def test_concurrency_two_runs_two_2_second_tasks_in_about_2_seconds(make_queue, sqs_client, worker):
    # Given a pool of two whose processes are both ready (on a busy machine one may start well after the other)
    url = make_queue()
    run = worker(url, "--concurrency", "2")
    wait_for(lambda: run.stderr.count("worker ready") == 2, timeout=30, message="both worker processes")

    # When two 2-second tasks arrive
    submit(sqs_client, url, "nap", id="a", seconds=2)
    submit(sqs_client, url, "nap", id="b", seconds=2)
    wait_for(lambda: len(ends(run.record_path)) == 2, timeout=20, message="both tasks to end")
    run.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.stderr

    # Then they ran at once, in two processes
    lines = records(run.record_path)
    first_start = min(line["at"] for line in lines if line["event"] == "start")
    last_end = max(line["at"] for line in lines if line["event"] == "end")
    assert sorted(ends(run.record_path)) == ["a", "b"]
    assert last_end - first_start < 3.0  # serially it would take 4 s
    assert len({line["pid"] for line in lines}) == 2  # in two processes


def test_each_retry_policy_ends_in_the_queues_dlq_with_the_same_body_after_its_last_attempt(
        make_queue, sqs_client, worker):
    # Given a queue whose redrive policy moves a message after 3 receives, and tasks allowed 2 retries:
    # fixed(1), linear(0, 2) and exponential(1, 1.5)
    url = make_queue(dead_letter=True, max_receive_count=3)
    dlq = make_queue.dead_letter_urls[url]
    tasks = ["fail_fixed", "fail_linear", "fail_exponential"]
    for task in tasks:
        submit(sqs_client, url, task, id=task)

    # When a worker runs until the queue is empty
    run = worker(url, "--until-empty")
    assert run.wait() == 0, run.stderr

    # Then each ran 1 + 2 retries times and sits in the DLQ with the body it was sent with
    assert sorted(starts(run.record_path)) == sorted(tasks * 3)
    assert bodies(sqs_client, dlq) == sorted(json.dumps({"task": task, "kwargs": {"id": task}}) for task in tasks)
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    # And the retries came after the policy's delays: linear(0, 2) waits 0 s, then 2 s
    linear = [line["at"] for line in records(run.record_path) if line["id"] == "fail_linear"]
    assert linear[1] - linear[0] < 1.5 and 1.9 < linear[2] - linear[1] < 4
    assert run.stderr.count("retry scheduled") == 6 and run.stderr.count("dead-lettered") == 3


def test_explicit_dlq_gets_the_message_then_it_is_deleted_here(make_queue, sqs_client, worker):
    # Given a queue without a redrive policy and an explicit dead-letter queue
    url = make_queue()
    dlq = make_queue()
    submit(sqs_client, url, "fail_fixed", id="f")
    submit(sqs_client, url, "fail_not_retried", id="v")

    run = worker(url, "--until-empty", "--dlq", dlq)
    assert run.wait() == 0, run.stderr

    # Then fail_fixed ran three times, fail_not_retried (ValueError is not in retry_on) once, and both moved
    assert sorted(starts(run.record_path)) == ["f", "f", "f", "v"]
    assert bodies(sqs_client, dlq) == sorted([json.dumps({"task": "fail_fixed", "kwargs": {"id": "f"}}),
                                              json.dumps({"task": "fail_not_retried", "kwargs": {"id": "v"}})])
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_without_redrive_policy_or_dlq_the_message_is_kept_and_the_log_says_so(make_queue, sqs_client, worker):
    url = make_queue()
    submit(sqs_client, url, "fail_fixed", id="k")

    run = worker(url, "--max-tasks", "3")
    assert run.wait() == 0, run.stderr

    assert starts(run.record_path) == ["k", "k", "k"]
    assert queue_counts(sqs_client, url) == (0, 1, 0)  # still here, hidden for a later worker
    assert "no redrive policy and no --dlq" in run.stderr


def test_raise_retry_runs_the_task_again_after_the_delay(make_queue, sqs_client, worker):
    url = make_queue()
    submit(sqs_client, url, "retry_once", id="r")

    run = worker(url, "--until-empty")
    assert run.wait() == 0, run.stderr

    lines = records(run.record_path)
    assert starts(run.record_path) == ["r", "r"] and ends(run.record_path) == ["r"]
    assert lines[-1]["at"] - lines[0]["at"] >= 0.9  # Retry(delay=1)
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_unknown_task_and_malformed_body_are_reported_and_kept_for_the_dlq(make_queue, sqs_client, worker):
    # Given a malformed body, an unknown task and a good task, on a queue with a redrive policy
    url = make_queue(dead_letter=True, max_receive_count=2)
    dlq = make_queue.dead_letter_urls[url]
    sqs_client.send_message(QueueUrl=url, MessageBody="{not json")
    submit(sqs_client, url, "no_such_task", id="u")
    submit(sqs_client, url, "note", id="good")

    run = worker(url, "--until-empty")
    assert run.wait(timeout=40) == 0, run.stderr

    # Then the loop went on, both bad messages ended in the DLQ unchanged, and the log names them
    assert starts(run.record_path) == ["good"]
    assert bodies(sqs_client, dlq) == sorted(["{not json", json.dumps({"task": "no_such_task", "kwargs": {"id": "u"}})])
    assert "unknown task 'no_such_task'" in run.stderr and "malformed" in run.stderr


def test_priority_queues_drain_the_first_before_the_next(make_queue, sqs_client, worker):
    high, low = make_queue(), make_queue()
    for index in range(2):
        submit(sqs_client, low, "note", id=f"low{index}")
    for index in range(3):
        submit(sqs_client, high, "note", id=f"high{index}")

    run = worker(high, "--queue", low, "--until-empty")
    assert run.wait() == 0, run.stderr

    order = starts(run.record_path)
    assert sorted(order[:3]) == ["high0", "high1", "high2"]
    assert sorted(order[3:]) == ["low0", "low1"]


def test_max_tasks_stops_after_that_many_tasks(make_queue, sqs_client, worker):
    url = make_queue()
    for index in range(3):
        submit(sqs_client, url, "note", id=f"m{index}")

    run = worker(url, "--max-tasks", "2")
    assert run.wait() == 0, run.stderr

    assert len(starts(run.record_path)) == 2
    assert queue_counts(sqs_client, url) == (1, 0, 0)


def test_a_missing_queue_is_one_error_line_and_exit_code_3(sqs_server, worker):
    url = f"{sqs_server.endpoint}/123456789012/no-such-queue"
    started = time.monotonic()
    run = worker(url)
    assert run.wait() == 3
    assert time.monotonic() - started < 10
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line or "error" in line]
    assert len(errors) == 1 and "does not exist" in errors[0]


@pytest.mark.skipif("process" not in isolation_modes(), reason="process isolation is not registered (issue 3)")
def test_process_isolation_runs_the_task_in_a_child_process(make_queue, sqs_client, worker):
    url = make_queue()
    submit(sqs_client, url, "note", id="p")
    run = worker(url, "--isolation", "process", "--until-empty")
    assert run.wait() == 0, run.stderr
    assert ends(run.record_path) == ["p"]
    assert records(run.record_path)[0]["pid"] != run.process.pid


def test_a_prefetched_message_stays_hidden_past_its_visibility_until_it_starts(make_queue, sqs_client, worker):
    # Given a worker that holds one message beyond the running one, with 2-second leases
    url = make_queue(visibility_timeout=30)
    submit(sqs_client, url, "nap", id="a", seconds=3)
    submit(sqs_client, url, "nap", id="b", seconds=0)
    run = worker(url, "--prefetch", "1", "--sqs-timeout", "2", "--alarm-timeout", "0.5", "--until-empty",
                 "-v")  # the per-beat "extended" lines are at DEBUG
    wait_for(lambda: starts(run.record_path), message="the first task to start")

    # When the first task runs longer than the lease the receive took on both
    time.sleep(2.5)

    # Then neither message became visible to other consumers, and each ran once
    assert queue_counts(sqs_client, url)[0] == 0
    assert run.wait() == 0, run.stderr
    assert sorted(starts(run.record_path)) == ["a", "b"]
    assert "extended message" in run.stderr


def test_a_task_past_its_hard_timeout_is_logged_as_timed_out_and_retried(make_queue, sqs_client, worker):
    url = make_queue()
    submit(sqs_client, url, "nap", id="slow", seconds=30)

    run = worker(url, "--hard-timeout", "1", "--max-tasks", "1")
    assert run.wait() == 0, run.stderr

    assert ends(run.record_path) == []
    assert "timed out message" in run.stderr and "retry scheduled" in run.stderr
    assert sum(queue_counts(sqs_client, url)) == 1  # handed back with a backoff, not deleted
