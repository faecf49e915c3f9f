"""``sqsmaster worker --metrics``: Prometheus metrics added up over a pool's processes, scraped over HTTP."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqsmaster.backends.sqs import SqsQueue
from sqsmaster.errors import ConfigurationError, QueueDoesNotExist
from sqsmaster.store import JobFilter, open_store
from sqsmaster.supervise.policy import HeartbeatPolicy
from sqsmaster.worker.events import AttemptStart, Observers, WorkerEvents
from sqsmaster.worker.exporter import MULTIPROC_DIR, MetricsExporter, parse_address
from sqsmaster.worker.metrics import MetricsObserver, queue_label
from sqsmaster.worker.worklog import AttemptRecord, event_name

from .workerkit import ROOT, WorkerRun, records, submit, wait_for

#: Labels a series may carry: the queue and the task, never a message id.
ALLOWED_LABELS = {"queue", "task", "outcome", "reason", "operation", "code", "state", "le"}


def scrape(url: str) -> dict[str, list[Any]]:
    """The endpoint's samples by sample name (``sqsmaster_tasks_total``...), and its raw text under ``""``."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples: dict[str, list[Any]] = collections.defaultdict(list)
    samples[""] = [text]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append(sample)
    return samples


def total(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def metrics_url(run: WorkerRun) -> str:
    found = wait_for(lambda: re.search(r"metrics on (http://\S+/metrics)", run.stderr), 15, "the metrics line")
    return found.group(1)


def store_outcomes(url: str) -> collections.Counter[str]:
    """Finished attempts in the job store, by outcome (in the metrics' words: 'timed out' is 'timed_out')."""
    store = open_store(url, create=False)
    try:
        rows = store.attempts(JobFilter(), time.time(), limit=500).rows
        return collections.Counter(event_name(row.outcome) for row in rows if row.outcome is not None)
    finally:
        store.close()


def store_tasks(url: str, status: str) -> list[str]:
    store = open_store(url, create=False)
    try:
        return [row.task for row in store.attempts(JobFilter(status=status), time.time()).rows]
    finally:
        store.close()


def test_a_pool_counts_what_ran_once_over_its_processes_during_and_after_a_run(make_queue, sqs_client, tmp_path):
    # Given a pool of 2 worker processes with --metrics on a bare port (so 127.0.0.1), its temp files in a
    # directory of the test's, and a queue with no redrive policy (a failure not retried is kept, hidden)
    url = make_queue(visibility_timeout=30)
    temp = tmp_path / "tmp"
    temp.mkdir()
    # (and the directory of a worker that was SIGKILLed, which this one removes)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (temp / f"sqsmaster-metrics-{gone.pid}-x1y2").mkdir()
    job_log, store_url = tmp_path / "jobs.jsonl", f"sqlite:///{tmp_path}/jobs.db"
    # --hard-timeout 5: the napping task times out after 5 s, long enough to scrape it while it runs on a loaded
    # machine; hold_gil's 2 s in one C call starve its heartbeat thread (due every 0.5 s) of the GIL.
    run = WorkerRun(url, ["--tasks", "tests.metrics_tasks", "--concurrency", "2", "--metrics", "0",
                          "--sqs-timeout", "8", "--alarm-timeout", "0.5", "--wait-time", "1", "--hard-timeout", "5",
                          "--job-log", str(job_log), "--store", store_url], tmp_path / "records.jsonl",
                   env={"TMPDIR": str(temp)})
    try:
        endpoint = metrics_url(run)
        assert endpoint.startswith("http://127.0.0.1:")
        # When tasks run: quick ones, failing ones, one past its hard timeout, one over its memory cap, one holding
    # the GIL
        ids = [submit(sqs_client, url, "note", id=f"n{i}") for i in range(4)]
        ids += [submit(sqs_client, url, "fail_no_retry", id=f"f{i}") for i in range(2)]
        ids += [submit(sqs_client, url, "hold_gil", id="gil", seconds=2)]
        ids += [submit(sqs_client, url, "nap_once", id="late", seconds=60)]
        ids += [submit(sqs_client, url, "over_cap", id="big")]
        # and a hostile body naming a task nobody runs: it must not become a label of its own
        hostile = "x" * 300 + "-unknown"
        ids += [sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps({"task": hostile, "kwargs": {}}))[
            "MessageId"]]

        # Then during the run the napping task shows in progress
        wait_for(lambda: any(r.get("id") == "late" for r in records(run.record_path)), 20, "the nap to start")
        during = scrape(endpoint)
        assert total(during, "sqsmaster_tasks_in_progress", task="nap_once") == 1
        # as the job store does
        assert "nap_once" in wait_for(lambda: store_tasks(store_url, "running"), 10, "the nap in the store")

        # And after it, every attempt is counted once, by the job log's outcome
        # (the job log is written just before the observers are told: wait for both)
        wait_for(lambda: job_log.exists() and len(job_log.read_text().splitlines()) == len(ids), 30,
                 "every attempt in the job log")
        after = wait_for(lambda: (found := scrape(endpoint)) and total(found, "sqsmaster_tasks_total") == len(ids)
                         and found, 10, "every attempt counted")
        logged = collections.Counter(event_name(json.loads(line)["outcome"])
                                     for line in job_log.read_text().splitlines())
        counted: collections.Counter[str] = collections.Counter()
        for sample in after["sqsmaster_tasks_total"]:
            counted[sample.labels["outcome"]] += int(sample.value)
        assert counted == logged == {"succeeded": 5, "failed": 4, "timed_out": 1}
        # and the job store shows the same counts (its writes are queued: wait for the last of them)
        stored = wait_for(lambda: (found := store_outcomes(store_url)) and sum(found.values()) == len(ids) and found,
                          10, "every attempt in the store")
        assert stored == counted
        assert total(after, "sqsmaster_tasks_total", task="other", outcome="failed") == 1
        assert hostile not in after[""][0]
        assert total(after, "sqsmaster_tasks_total", task="note", outcome="succeeded") == 4
        assert total(after, "sqsmaster_tasks_in_progress") == 0
        assert total(after, "sqsmaster_task_duration_seconds_count") == len(ids) - 1  # all but the rejected one
        assert total(after, "sqsmaster_task_queue_wait_seconds_count") == len(ids) - 1
        assert total(after, "sqsmaster_hard_kills_total", task="nap_once", reason="timeout") == 1
        assert total(after, "sqsmaster_hard_kills_total", task="over_cap", reason="memory_cap") == 1
        assert total(after, "sqsmaster_hard_kills_total") == 2
        # the GIL holder's heartbeat ran at least a second late (due after 0.5 s, it could run after 2 s only)
        beats = total(after, "sqsmaster_heartbeats_total")
        assert beats > 0 and total(after, "sqsmaster_heartbeat_lag_seconds_count") == beats
        assert total(after, "sqsmaster_heartbeat_lag_seconds_bucket", task="hold_gil", le="1.0") < \
            total(after, "sqsmaster_heartbeat_lag_seconds_count", task="hold_gil")
        # the queue's depth, sampled by the parent, by state; the backlog per process beside it
        name = queue_label(url)
        assert {s.labels["state"] for s in after["sqsmaster_queue_messages"] if s.labels["queue"] == name} == \
            {"visible", "in_flight", "delayed"}
        assert [s.labels["queue"] for s in after["sqsmaster_queue_backlog_per_process"]] == [name]
        assert total(after, "sqsmaster_worker_processes") == 2
        # and no message id anywhere: not as a label, not as a value
        for snapshot in (during, after):
            assert not any(message_id in snapshot[""][0] for message_id in ids)
            assert {label for samples in snapshot.values() for s in samples if hasattr(s, "labels")
                    for label in s.labels} <= ALLOWED_LABELS

        # When the worker stops, its metrics directory goes with it
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0
        assert list(temp.iterdir()) == []
    finally:
        run.kill()


def test_the_address_is_loopback_unless_it_says_otherwise():
    assert parse_address("9191") == ("127.0.0.1", 9191)
    assert parse_address("0.0.0.0:9191") == ("0.0.0.0", 9191)
    assert parse_address("[::1]:9191") == ("::1", 9191)
    for bad in ("", ":9191", "::1:9191", "host:port", "127.0.0.1:70000"):
        with pytest.raises(ConfigurationError, match="--metrics"):
            parse_address(bad)


def worker_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", "tests.worker_tasks", *args]


def test_without_the_extra_the_worker_says_what_to_install_and_exits_2(tmp_path):
    # Given prometheus_client that cannot be imported
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    # When a worker is asked for metrics (from the environment, as a deployment would)
    done = subprocess.run(worker_command("http://127.0.0.1:9/000000000000/q"), cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**env, "SQSMASTER_METRICS": "9191"})
    # Then it says in one line what to install, and exits 2 before it touches any queue
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "pip install 'sqsmaster[metrics]'" in done.stderr


def test_an_address_that_cannot_be_listened_on_is_one_line_and_exit_2(make_queue):
    url = make_queue()
    done = subprocess.run(worker_command(url, "--metrics", "203.0.113.7:9191"), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--metrics 203.0.113.7:9191: cannot listen there" in done.stderr.strip().splitlines()[-1]


def test_the_heartbeat_lag_is_how_late_a_beat_runs_against_its_schedule():
    now = [100.0]
    policy = HeartbeatPolicy(sqs_timeout=30, alarm_timeout=10, hard_timeout=300, clock=lambda: now[0])
    now[0] = 105.0
    assert policy.beat_lag() == 0.0  # not due yet
    now[0] = 112.5  # due at 110: the thread got the CPU (the GIL) 2.5 s late
    assert policy.beat_lag() == 2.5
    policy.beat_done(True)
    now[0] = 122.5
    assert policy.beat_lag() == 0.0


class _Kill(WorkerEvents):
    def keep_running(self, start: AttemptStart) -> bool:
        return False


def test_sqs_errors_by_operation_and_operator_kills_are_counted(make_queue, sqs_server):
    # Given the exporter of a worker and a worker process's metrics observer beside an operator's kill hook
    url = make_queue()
    exporter = MetricsExporter(("127.0.0.1", 0), [url], 1)
    exporter.start()
    observer = MetricsObserver(["solve"])
    try:
        # When an SQS call fails (a queue that does not exist, on the real server)
        missing = url.rsplit("/", 1)[0] + "/no-such-queue"
        with pytest.raises(QueueDoesNotExist):
            SqsQueue(missing).get_attributes()
        # and an entry of a batch fails in a call that succeeds (a receipt handle SQS does not know)
        assert len(SqsQueue(url).delete_batch(["no-such-receipt-handle"])) == 1
        # and a running attempt is stopped because an observer said so (outcome "stuck" or "killed")
        events = Observers([observer, _Kill()])
        start = AttemptStart("m-1", url, "solve", 1, {}, time.time(), time.time() + 60, 30, "signal")
        events.attempt_started(start)
        assert events.keep_running(start) is False
        events.attempt_ended(AttemptRecord("m-1", url, "solve", 1, "stuck", "retry", start.started, 1.0))
        # Then the scrape shows both, by operation and by reason
        samples = scrape(exporter.url)
        errors = {(s.labels["operation"], s.labels["code"]): s.value for s in samples["sqsmaster_sqs_errors_total"]}
        assert [op for op, code in errors if "NonExistentQueue" in code or "QueueDoesNotExist" in code] == \
            ["get_queue_attributes"]
        assert [(op, n) for (op, code), n in errors.items() if op.endswith("_batch")] == [("delete_message_batch", 1)]
        assert total(samples, "sqsmaster_hard_kills_total", task="solve", reason="operator_kill") == 1
        assert total(samples, "sqsmaster_tasks_in_progress") == 0
    finally:
        observer.close(1)
        exporter.close()
    # And the exporter leaves nothing behind
    assert MULTIPROC_DIR not in os.environ and not Path(str(exporter.path)).exists()


def test_a_pool_child_killed_mid_task_no_longer_shows_its_task_in_progress(make_queue, sqs_client, tmp_path):
    # Given a pool of 2 with --metrics, one of whose processes runs a long task
    url = make_queue(visibility_timeout=30)
    run = WorkerRun(url, ["--tasks", "tests.metrics_tasks", "--concurrency", "2", "--metrics", "127.0.0.1:0",
                          "--sqs-timeout", "8", "--wait-time", "1"], tmp_path / "records.jsonl")
    try:
        endpoint = metrics_url(run)
        submit(sqs_client, url, "nap_once", id="long", seconds=60)
        started = wait_for(lambda: [r for r in records(run.record_path) if r.get("id") == "long"], 20,
                           "the task to start")
        assert total(scrape(endpoint), "sqsmaster_tasks_in_progress") == 1
        # When its process is killed (the OOM killer, an operator)
        os.kill(started[0]["pid"], signal.SIGKILL)
        # Then its task no longer counts as in progress once the pool has seen it die
        wait_for(lambda: total(scrape(endpoint), "sqsmaster_tasks_in_progress") == 0, 10,
                 "the dead process's gauge to go")
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 4  # a worker process died: the pool says so
    finally:
        run.kill()


def test_a_lost_lease_and_the_sqs_error_behind_it_are_counted_in_a_one_process_worker(make_queue, sqs_client,
                                                                                       tmp_path):
    # Given a worker of one process (it serves the endpoint itself) running a task
    url = make_queue(visibility_timeout=30)
    job_log = tmp_path / "jobs.jsonl"
    run = WorkerRun(url, ["--tasks", "tests.metrics_tasks", "--metrics", "0", "--sqs-timeout", "4",
                          "--alarm-timeout", "0.5", "--wait-time", "1", "--job-log", str(job_log)],
                    tmp_path / "records.jsonl")
    try:
        endpoint = metrics_url(run)
        submit(sqs_client, url, "nap_once", id="lost", seconds=2)
        wait_for(lambda: records(run.record_path), 20, "the task to start")
        # When its message is taken away from it (purged: the next heartbeat finds its receipt handle invalid)
        sqs_client.purge_queue(QueueUrl=url)
        # Then the lease loss is counted for its task once the attempt ended, and the failed calls by operation:
        # the heartbeat's, and the delete (in a batch) of the task that succeeded with a stale receipt handle
        samples = wait_for(lambda: (found := scrape(endpoint)) and total(found, "sqsmaster_tasks_total") and total(
            found, "sqsmaster_sqs_errors_total", operation="delete_message_batch") and found, 20,
            "the attempt and its delete to be counted")
        assert total(samples, "sqsmaster_lease_losses_total", task="nap_once") == 1
        assert total(samples, "sqsmaster_sqs_errors_total", operation="change_message_visibility") >= 1
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0
    finally:
        run.kill()


def test_a_frozen_server_holds_up_neither_a_scrape_nor_the_exporters_end(frozen_moto):
    # Given an exporter sampling a queue on a server that then stops answering (a network partition)
    server, endpoint = frozen_moto
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    url = client.create_queue(QueueName="frozen")["QueueUrl"]
    exporter = MetricsExporter(("127.0.0.1", 0), [url], 1, period=0.2)
    exporter.start()
    try:
        wait_for(lambda: "sqsmaster_queue_messages" in scrape(exporter.url), 10, "a first sample")
        server.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the sampler is now stuck in a call the server does not answer
        # When Prometheus scrapes, Then the answer comes at once, from the last sample
        began = time.monotonic()
        assert "sqsmaster_queue_messages" in scrape(exporter.url)
        assert time.monotonic() - began < 3  # a file read and a lock, not a network call (margin: a loaded host)
    finally:
        # And the exporter's end waits for no answer either (CLOSE_TIMEOUT, then the sampler is abandoned)
        began = time.monotonic()
        exporter.close()
        assert time.monotonic() - began < 5
        server.send_signal(signal.SIGCONT)


def test_a_scrape_while_a_process_creates_its_metrics_file_is_answered(tmp_path):
    # Given an exporter, and a worker process caught between creating its metrics file and sizing it
    # (prometheus_client opens the file, then truncates it to its initial size: for an instant it is empty)
    exporter = MetricsExporter(("127.0.0.1", 0), [], 1)
    exporter.start()
    try:
        assert exporter.path is not None
        Path(exporter.path, f"counter_{os.getpid()}.db").touch()
        # When Prometheus scrapes at that instant, Then it gets the metrics, not a 500 (CI saw one)
        assert "sqsmaster_worker_processes" in scrape(exporter.url)[""][0]
    finally:
        exporter.close()
