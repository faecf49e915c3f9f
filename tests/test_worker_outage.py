"""A shutdown bounded by the clock: SIGTERM while the endpoint does not answer (moto frozen with SIGSTOP)."""

from __future__ import annotations

import signal
import time

from sqsmaster.worker.shutdown import SHUTDOWN_MARGIN

from .conftest import queue_counts
from .workerkit import WorkerRun, starts, submit, wait_for

GRACE = 3


def test_sigterm_while_the_endpoint_is_frozen_exits_within_the_grace_plus_the_margin_and_names_what_it_owes(
        frozen_moto, tmp_path):
    # Given a worker running a 1.5 s task and holding two prefetched messages, on an endpoint that then freezes
    process, endpoint = frozen_moto
    from .workerkit import client_for

    client = client_for(endpoint)
    url = client.create_queue(QueueName="frozen-stop", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    quick = submit(client, url, "nap", id="quick", seconds=1.5)
    waiting = [submit(client, url, "nap", id=f"later{index}", seconds=30) for index in range(2)]
    run = WorkerRun(url, ["--prefetch", "2", "--grace", str(GRACE), "--sqs-timeout", "8", "--alarm-timeout", "2",
                          "--wait-time", "1"], tmp_path / "records.jsonl")
    wait_for(lambda: starts(run.record_path), timeout=20, message="the first task to start")
    process.send_signal(signal.SIGSTOP)

    # When the worker gets SIGTERM during the outage
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=60)
    took = time.monotonic() - stopped
    process.send_signal(signal.SIGCONT)
    log = run.stderr

    # Then it exits within --grace + SHUTDOWN_MARGIN (plus 4 s for start-up and scheduling on a loaded 2-core
    # machine), not after the endpoint comes back; the exit code says work was left undone
    assert took < GRACE + SHUTDOWN_MARGIN + 4, log
    assert code == 5, log
    # And the log names the succeeded task whose delete could not be made, and each unreleased message
    assert f"message {quick}: task succeeded but its delete" in log
    for message_id in waiting:
        assert f"message {message_id}: received, not started" in log and "comes back when its visibility" in log
    # And once the endpoint answers again, nothing is lost: every message is deleted or comes back
    def settled() -> bool:
        visible, in_flight, _ = queue_counts(client, url)
        return in_flight == 0 and visible >= 2

    wait_for(settled, timeout=20, message="the messages to come back after their visibility timeout")
    found = set()
    while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)\
            .get("Messages", []):
        found |= {message["MessageId"] for message in batch}
    assert set(waiting) <= found <= {quick, *waiting}


def test_a_task_that_swallows_the_shutdown_is_ended_by_the_deadline(make_queue, sqs_client, tmp_path):
    # Given a worker running a task that swallows every interrupt, with a 1 s grace
    url = make_queue(visibility_timeout=30)
    stuck = submit(sqs_client, url, "swallow_forever", id="s")
    run = WorkerRun(url, ["--grace", "1", "--sqs-timeout", "30", "--wait-time", "1"], tmp_path / "records.jsonl")
    wait_for(lambda: starts(run.record_path), timeout=20, message="the task to start")

    # When the worker gets SIGTERM
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=60)
    took = time.monotonic() - stopped

    # Then the task swallowed WorkerShutdown at the end of the grace, and the deadline ended the worker
    # (--grace + SHUTDOWN_MARGIN, plus 4 s for a loaded 2-core machine), naming the message it leaves behind
    assert 1 + SHUTDOWN_MARGIN - 0.5 < took < 1 + SHUTDOWN_MARGIN + 4, run.stderr
    assert code == 5, run.stderr
    assert f"message {stuck}: its task or its release did not finish by the deadline" in run.stderr
