"""Stopping a worker: SIGTERM/SIGINT, a second signal, SIGKILL, and an endpoint that goes away."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import queue_counts
from .workerkit import client_for, ends, records, starts, submit, wait_for, worker_factory

FAST = ["--sqs-timeout", "4", "--wait-time", "20"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, FAST)


def test_sigterm_mid_task_releases_unstarted_messages_at_once_and_a_second_worker_completes_the_rest(
        make_queue, sqs_client, worker):
    # Given a 30 s visibility timeout and a worker holding two prefetched messages while it runs a 2 s task
    url = make_queue(visibility_timeout=30)
    for index in range(3):
        submit(sqs_client, url, "nap", id=f"t{index}", seconds=2)
    first = worker(url, "--prefetch", "2", "--grace", "10", "--sqs-timeout", "30")
    wait_for(lambda: starts(first.record_path), message="the first task to start")

    # When it gets SIGTERM
    first.send_signal(signal.SIGTERM)

    # Then the two unstarted messages are visible again at once (not after 30 s), while the task still runs
    wait_for(lambda: queue_counts(sqs_client, url)[0] == 2, timeout=1.5, message="the release of unstarted messages")
    assert ends(first.record_path) == []
    # And the running task finishes, and the worker exits 0
    assert first.wait(timeout=10) == 0, first.stderr
    assert len(ends(first.record_path)) == 1
    # And a second worker completes the rest: nothing lost, nothing twice
    second = worker(url, "--until-empty", "--wait-time", "1", "--concurrency", "2")
    assert second.wait() == 0, second.stderr
    assert sorted(starts(first.record_path)) == ["t0", "t1", "t2"]
    assert sorted(ends(first.record_path)) == ["t0", "t1", "t2"]


def test_a_task_still_running_when_the_grace_ends_is_stopped_and_released(make_queue, sqs_client, worker):
    url = make_queue(visibility_timeout=30)
    submit(sqs_client, url, "nap", id="long", seconds=60)
    run = worker(url, "--grace", "1", "--sqs-timeout", "30")
    wait_for(lambda: starts(run.record_path), message="the task to start")

    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)

    assert run.wait(timeout=10) == 0, run.stderr
    assert time.monotonic() - stopped < 4
    assert ends(run.record_path) == []
    assert queue_counts(sqs_client, url) == (1, 0, 0)  # visible again now, not in 30 s


def test_a_second_signal_releases_everything_now(make_queue, sqs_client, worker):
    url = make_queue(visibility_timeout=30)
    submit(sqs_client, url, "nap", id="long", seconds=60)
    run = worker(url, "--grace", "60", "--sqs-timeout", "30")
    wait_for(lambda: starts(run.record_path), message="the task to start")

    run.send_signal(signal.SIGINT)
    time.sleep(0.3)
    stopped = time.monotonic()
    run.send_signal(signal.SIGINT)

    assert run.wait(timeout=10) == 0, run.stderr
    assert time.monotonic() - stopped < 3
    assert queue_counts(sqs_client, url) == (1, 0, 0)


def test_sigterm_while_idle_exits_within_about_a_second(make_queue, worker):
    url = make_queue()
    run = worker(url)  # long polls of up to 20 s
    run.wait_until_ready()
    time.sleep(0.5)

    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)

    assert run.wait(timeout=10) == 0, run.stderr
    assert time.monotonic() - stopped < 2


def test_sigterm_stops_a_pool_of_workers_cleanly(make_queue, sqs_client, worker):
    url = make_queue(visibility_timeout=30)
    for index in range(2):
        submit(sqs_client, url, "nap", id=f"p{index}", seconds=1)
    run = worker(url, "--concurrency", "2", "--grace", "10")
    wait_for(lambda: len(starts(run.record_path)) == 2, message="both tasks to start")

    run.send_signal(signal.SIGTERM)

    assert run.wait(timeout=10) == 0, run.stderr
    assert sorted(ends(run.record_path)) == ["p0", "p1"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_sigkill_mid_task_the_message_comes_back_and_another_worker_completes_it(make_queue, sqs_client, worker):
    # Given a worker killed while its task runs, with a 2 s lease
    url = make_queue(visibility_timeout=30)
    submit(sqs_client, url, "nap", id="k", seconds=1)
    first = worker(url, "--sqs-timeout", "2", "--alarm-timeout", "0.5")
    wait_for(lambda: starts(first.record_path), message="the task to start")
    first.process.send_signal(signal.SIGKILL)
    first.wait()

    # When another worker runs
    second = worker(url, "--until-empty", "--wait-time", "1")

    # Then it gets the message once the lease runs out, and completes it
    assert second.wait() == 0, second.stderr
    assert starts(first.record_path) == ["k", "k"] and ends(first.record_path) == ["k"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_endpoint_down_then_back_backs_off_and_recovers(frozen_moto, worker):
    # Given a worker polling an endpoint that then stops answering (moto frozen with SIGSTOP)
    process, endpoint = frozen_moto
    client = client_for(endpoint)
    url = client.create_queue(QueueName="frozen")["QueueUrl"]
    run = worker(url, "--wait-time", "1")
    run.wait_until_ready()
    time.sleep(0.5)
    process.send_signal(signal.SIGSTOP)

    # When it stays down ~7 s (a receive gives up after 4 s) and comes back
    time.sleep(7)
    process.send_signal(signal.SIGCONT)
    submit(client, url, "note", id="after")

    # Then the worker backed off (no hot loop), recovered, and ran the task
    wait_for(lambda: ends(run.record_path) == ["after"], timeout=15, message="the task after recovery")
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=10) == 0
    failures = run.stderr.count("queue unreachable")
    assert 1 <= failures <= 4, run.stderr
    assert "reachable again" in run.stderr


def test_a_pool_replaces_a_killed_child_and_its_message_is_completed(make_queue, sqs_client, worker):
    # Given a pool of two running a task each, with 2-second leases
    url = make_queue(visibility_timeout=30)
    submit(sqs_client, url, "nap", id="a", seconds=1.5)
    submit(sqs_client, url, "nap", id="b", seconds=1.5)
    run = worker(url, "--concurrency", "2", "--sqs-timeout", "2", "--alarm-timeout", "0.5", "--until-empty",
                 "--wait-time", "1")
    wait_for(lambda: len(starts(run.record_path)) == 2, message="both tasks to start")

    # When one child is killed mid-task
    victim = next(line for line in records(run.record_path) if line["event"] == "start")
    os.kill(victim["pid"], signal.SIGKILL)

    # Then a new child is started, the message comes back, and both tasks complete
    code = run.wait(timeout=20)
    assert sorted(ends(run.record_path)) == ["a", "b"]
    assert f"(pid {victim['pid']}) was killed by SIGKILL" in run.stderr and "starting another" in run.stderr
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    # And the pool's exit code says a worker process died (4), though the work got done
    assert code == 4, run.stderr


def test_a_stop_forced_before_the_watcher_looks_is_still_logged(caplog):
    # Given a pool child's signals, whose pool's parent counted two SIGTERMs before the child's watcher
    # thread had its first look (a loaded machine: the worker can release everything and end first)
    import ctypes
    import multiprocessing
    import signal as signals_module

    from sqsmaster.worker.signals import ShutdownSignals

    count, cause = multiprocessing.Value(ctypes.c_int, 2), multiprocessing.Value(ctypes.c_int, signals_module.SIGTERM)
    caplog.set_level("WARNING", logger="sqsmaster.worker")

    # When the worker ends at once
    with ShutdownSignals(grace=60, stop_count=count, cause=cause):
        pass

    # Then the log still says what the operator did, in order
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(" (")[0] for line in lines] == ["SIGTERM to the pool received: stopping",
                                                       "SIGTERM to the pool received again: releasing everything now"]
