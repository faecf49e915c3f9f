"""Real ``sqsmaster worker`` processes recording to a job store, and obeying its kill and cancel orders.

moto's SQS over HTTP, real worker processes (tests/workerkit.py), the sqlite:// job store
(and dynamodb:// on moto where that store is installed).
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

import sqsmaster.store as store_schemes
from sqsmaster.cli import main
from sqsmaster.ops import control
from sqsmaster.store import JobFilter, open_store

from .conftest import queue_counts
from .workerkit import bodies, ends, records, starts, submit, wait_for, worker_factory

#: Heartbeat every second, so a kill lands within about FLAG_POLL (1 s) + 1 s of its order.
QUICK = ["--sqs-timeout", "4", "--alarm-timeout", "1", "--wait-time", "1"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, QUICK)


#: The stores the end-to-end tests run on: sqlite://, and dynamodb:// (on the moto server) where it is installed.
STORES = ["sqlite", *(["dynamodb"] if "dynamodb" in store_schemes._SCHEMES else [])]


@pytest.fixture(params=STORES)
def store_url(request, tmp_path: Path, sqs_server) -> str:
    if request.param == "dynamodb":
        return f"dynamodb://jobs-{uuid.uuid4().hex[:10]}?endpoint={sqs_server.endpoint}&region=us-east-1"
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    """A sqlite:// store, for the tests that need its file (to lock it) or that are costly to repeat."""
    return f"sqlite:///{tmp_path}/jobs.db"


def rows_of(url: str, message_id: str) -> list:
    store = open_store(url, create=False)
    try:
        return store.attempts_of(message_id)
    finally:
        store.close()


def job_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_pool_of_two_workers_of_two_processes_records_every_attempt_and_every_process(
        make_queue, sqs_client, worker, store_url):
    # Given twelve tasks on a queue
    url = make_queue(visibility_timeout=30)
    ids = [submit(sqs_client, url, "note", id=f"n{index}") for index in range(12)]
    # When two workers of two processes each drain it, recording to one store
    runs = [worker(url, "--concurrency", "2", "--until-empty", "--store", store_url) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=60) == 0, run.stderr
    # Then each message has exactly one attempt recorded, succeeded and deleted, with its worker and times
    store = open_store(store_url, create=False)
    for message_id in ids:
        [row] = store.attempts_of(message_id)
        assert (row.outcome, row.action, row.task, row.attempt, row.queue) == ("succeeded", "deleted", "note", 1, url)
        assert row.started <= row.ended and row.runtime is not None and row.deadline > row.started
        assert row.kwargs is not None and json.loads(row.kwargs)["id"].startswith("n")
    # And the four worker processes registered, each stopped at the end
    workers = store.workers()
    assert len(workers) == 4 and all(w.stopped is not None and w.queues == [url] for w in workers), workers
    assert {row.worker for message_id in ids for row in store.attempts_of(message_id)} <= {w.worker for w in workers}
    store.close()


def kill_task(store_url: str, message_id: str, then: str, capsys) -> str:
    assert main(["kill", message_id, "--then", then, "--store", store_url]) == 0
    return capsys.readouterr().out


def wait_running(store_url: str, message_id: str, timeout: float = 20) -> None:
    def running() -> bool:
        store = open_store(store_url, create=False)
        try:
            return bool(store.attempts(JobFilter(status="running", message_id=message_id), time.time()).rows)
        finally:
            store.close()
    wait_for(running, timeout, f"message {message_id} to show running in the store")


def test_kill_in_signal_isolation_then_release_stops_the_task_and_its_message_runs_again_at_once(
        make_queue, sqs_client, worker, store_url, tmp_path, capsys):
    # Given a worker running a task that would sleep 30 s on its first delivery (and finish at once after),
    # with another message behind it
    url = make_queue(visibility_timeout=30)
    stalled = submit(sqs_client, url, "stall_once", id="s")
    run = worker(url, "--store", store_url, "--job-log", str(tmp_path / "jobs.log"))
    wait_for(lambda: starts(run.record_path) == ["s"], 20, "the task to start")
    wait_running(store_url, stalled)
    submit(sqs_client, url, "note", id="after")
    # When an operator kills it, to be released
    ordered = time.monotonic()
    out = kill_task(store_url, stalled, "release", capsys)
    assert f"kill ordered: message {stalled}" in out and "running: attempt 1 of task stall_once" in out
    # Then it stops within a flag poll and a heartbeat (1 s + 1 s; 5 s more for a loaded machine), outcome
    # killed everywhere; its message is visible at once, so it runs again (and succeeds) right away
    wait_for(lambda: any(r.outcome for r in rows_of(store_url, stalled)), 15, "the kill to be recorded")
    assert time.monotonic() - ordered < 7, run.stderr
    wait_for(lambda: sorted(ends(run.record_path)) == ["after", "s"], 20, "the next messages to run")
    killed, second = rows_of(store_url, stalled)
    assert (killed.attempt, killed.outcome, killed.action) == (1, "killed", "released")
    assert "killed by" in (killed.exception or "")
    assert (second.attempt, second.outcome) == (2, "succeeded")
    assert [r["outcome"] for r in job_log(tmp_path / "jobs.log") if r["message_id"] == stalled] == \
        ["killed", "succeeded"]
    assert f"killed message {stalled}" in run.stderr
    store = open_store(store_url, create=False)
    assert store.flags([stalled]) == {}  # the order was carried out
    assert [(a.what, a.target) for a in store.actions()] == [("kill", stalled)]
    store.close()


def test_kill_of_a_task_stuck_in_c_in_process_isolation_then_dead_letter_sends_it_to_the_redrive_target(
        make_queue, sqs_client, worker, sqlite_store_url, capsys):
    store_url = sqlite_store_url
    # Given a queue with a redrive policy (after 5 receives) and a worker running a task stuck in one C
    # call that holds the GIL and blocks SIGTERM (only SIGKILL of its process group stops it)
    url = make_queue(visibility_timeout=30, dead_letter=True, max_receive_count=5)
    stuck = submit(sqs_client, url, "gil_sleep", id="c", seconds=60)
    run = worker(url, "--isolation", "process", "--store", store_url)
    wait_for(lambda: starts(run.record_path) == ["c"], 20, "the task to start")
    wait_running(store_url, stuck)
    submit(sqs_client, url, "note", id="after")
    # When an operator kills it, to be dead-lettered
    ordered = time.monotonic()
    kill_task(store_url, stuck, "dead-letter", capsys)
    # Then it is stopped within a flag poll, a heartbeat and the kill grace (1 + 1 + 5 s; 5 s more for a
    # loaded machine), outcome killed; the message is in the dead-letter queue now, not after four more
    # receives; and the worker goes on with the next message
    wait_for(lambda: any(r.outcome for r in rows_of(store_url, stuck)), 20, "the kill to be recorded")
    assert time.monotonic() - ordered < 12, run.stderr
    wait_for(lambda: ends(run.record_path) == ["after"], 20, "the next message to run")
    [row] = rows_of(store_url, stuck)
    assert (row.outcome, row.action) == ("killed", "dead-lettered")
    assert [json.loads(body)["kwargs"]["id"] for body in bodies(sqs_client, make_queue.dead_letter_urls[url])] == ["c"]
    wait_for(lambda: queue_counts(sqs_client, url) == (0, 0, 0), 10, "the source queue to be empty")


def test_kill_then_delete_deletes_the_message(make_queue, sqs_client, worker, sqlite_store_url, capsys):
    store_url = sqlite_store_url
    url = make_queue(visibility_timeout=30)
    napping = submit(sqs_client, url, "nap", id="n", seconds=60)
    run = worker(url, "--store", store_url)
    wait_for(lambda: starts(run.record_path) == ["n"], 20, "the task to start")
    wait_running(store_url, napping)
    kill_task(store_url, napping, "delete", capsys)
    wait_for(lambda: any(r.outcome for r in rows_of(store_url, napping)), 15, "the kill to be recorded")
    [row] = rows_of(store_url, napping)
    assert (row.outcome, row.action) == ("killed", "deleted")
    wait_for(lambda: queue_counts(sqs_client, url) == (0, 0, 0), 10, "the queue to be empty")
    assert ends(run.record_path) == []


def test_a_cancelled_message_is_deleted_unrun_and_the_others_run(make_queue, sqs_client, worker, store_url,
                                                                   tmp_path, capsys):
    # Given three queued messages, one of them cancelled by an operator before any worker runs
    url = make_queue(visibility_timeout=30)
    ids = {name: submit(sqs_client, url, "note", id=name) for name in ("a", "b", "c")}
    open_store(store_url).close()  # the store exists (a worker made it, in real life)
    assert main(["cancel", ids["b"], "--store", store_url]) == 0
    assert f"cancel ordered: message {ids['b']}" in capsys.readouterr().out
    # When a worker drains the queue
    run = worker(url, "--until-empty", "--prefetch", "2", "--store", store_url, "--job-log",
                 str(tmp_path / "jobs.log"))
    assert run.wait(timeout=60) == 0, run.stderr
    # Then b never ran and is gone, recorded as cancelled; a and c ran
    assert sorted(starts(run.record_path)) == ["a", "c"]
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    [row] = rows_of(store_url, ids["b"])
    assert (row.outcome, row.action, row.task) == ("cancelled", "deleted", "note")
    assert [r["outcome"] for r in job_log(tmp_path / "jobs.log") if r["message_id"] == ids["b"]] == ["cancelled"]
    assert f"cancelled message {ids['b']}" in run.stderr
    store = open_store(store_url, create=False)
    assert store.flags([ids["b"]]) == {}
    store.close()


def test_a_cancel_that_came_while_its_task_ran_is_spent_when_the_task_succeeds(make_queue, sqs_client, worker,
                                                                                sqlite_store_url, capsys):
    # Given a task running for 4 s
    url = make_queue(visibility_timeout=30)
    napping = submit(sqs_client, url, "nap", id="n", seconds=4)
    run = worker(url, "--store", sqlite_store_url, "--until-empty")
    wait_for(lambda: starts(run.record_path) == ["n"], 20, "the task to start")
    wait_running(sqlite_store_url, napping)
    # When an operator cancels its message while it runs (the CLI warns that only kill stops it)
    assert main(["cancel", napping, "--store", sqlite_store_url]) == 0
    assert "is running now" in capsys.readouterr().err
    # Then the task runs to its end and succeeds, its message is deleted, and the order is spent, not left
    # pending for a message that is gone
    assert run.wait(timeout=60) == 0, run.stderr
    assert [(r.outcome, r.action) for r in rows_of(sqlite_store_url, napping)] == [("succeeded", "deleted")]
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    store = open_store(sqlite_store_url, create=False)
    assert store.flags([napping]) == {}
    store.close()


def test_a_locked_store_delays_no_task_and_the_log_counts_what_the_outage_lost(
        make_queue, sqs_client, worker, sqlite_store_url, tmp_path):
    store_url = sqlite_store_url
    # Given a worker recording to a store that is locked by another process (each write waits 5 s, then fails)
    url = make_queue(visibility_timeout=30)
    run = worker(url, "--store", store_url)
    run.wait_until_ready()
    lock = sqlite3.connect(str(tmp_path / "jobs.db"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        # When six half-second tasks run
        began = time.monotonic()
        for index in range(6):
            submit(sqs_client, url, "nap", id=f"t{index}", seconds=0.5)
        wait_for(lambda: len(ends(run.record_path)) == 6, 30, "the tasks to end")
        took = time.monotonic() - began
        wait_for(lambda: queue_counts(sqs_client, url) == (0, 0, 0), 10, "their deletes")
        # Then they ran back to back, as without a store: 3 s of tasks; a worker that waited for its store
        # would take 5 s more per write (over 30 s); 6 s of margin for a loaded machine
        assert took < 9, (took, run.stderr)
        lines = records(run.record_path)
        gaps = [b["at"] - a["at"] for a, b in zip(lines, lines[1:]) if a["event"] == "end" and b["event"] == "start"]
        assert max(gaps) < 2.5, gaps  # receive, decode, start: milliseconds; 2.5 s for a loaded machine
        wait_for(lambda: "unreachable" in run.stderr, 15, "the outage to be logged")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # And once the store answers again, new attempts are recorded and the log says what the outage cost
    after = submit(sqs_client, url, "note", id="after")
    wait_for(lambda: rows_of(store_url, after) and rows_of(store_url, after)[0].outcome == "succeeded", 30,
             "the attempt after the outage to be recorded")
    wait_for(lambda: "answers again" in run.stderr, 10, "the recovery to be logged")
    assert run.stderr.count("unreachable") == 1, run.stderr
    recovered = next(line for line in run.stderr.splitlines() if "answers again" in line)
    assert "record(s) lost during the outage" in recovered


def test_a_frozen_dynamodb_endpoint_delays_no_task_and_loses_only_the_outage_s_records(
        make_queue, sqs_client, worker, frozen_moto):
    # Given a worker recording to a DynamoDB table on a server of its own (the queue is on another), one task
    # recorded before the outage
    process, endpoint = frozen_moto
    # (read_timeout=1: a store call gives up after ~7 s rather than ~15, to keep the test short)
    store_url = f"dynamodb://jobs-{uuid.uuid4().hex[:10]}?endpoint={endpoint}&region=us-east-1&read_timeout=1"
    open_store(store_url).close()  # the table exists (sqsmaster store create, in real life)
    url = make_queue(visibility_timeout=30)
    run = worker(url, "--store", store_url)
    before = submit(sqs_client, url, "note", id="before")
    wait_for(lambda: [r.outcome for r in rows_of(store_url, before)] == ["succeeded"], 30, "the first record")
    # When the store's server freezes (a partition: no answer, no error) while six half-second tasks run
    process.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        during = [submit(sqs_client, url, "nap", id=f"t{index}", seconds=0.5) for index in range(6)]
        wait_for(lambda: len(ends(run.record_path)) == 7, 30, "the tasks to end")
        took = time.monotonic() - began
        wait_for(lambda: queue_counts(sqs_client, url) == (0, 0, 0), 10, "their deletes")
        # Then they ran back to back and were deleted, as without a store: 3 s of tasks; a worker that waited
        # for its store would wait ~7 s (a store call's bound) per write; 6 s of margin for a loaded machine
        assert took < 9, (took, run.stderr)
        wait_for(lambda: "unreachable" in run.stderr, 40, "the outage to be logged")
    finally:
        process.send_signal(signal.SIGCONT)
    # And once it answers again, new attempts are recorded, the log says what the outage cost, and every
    # record not lost in the outage is there
    after = submit(sqs_client, url, "note", id="after")
    wait_for(lambda: [r.outcome for r in rows_of(store_url, after)] == ["succeeded"], 60,
             "the attempt after the outage to be recorded")
    wait_for(lambda: "answers again" in run.stderr, 10, "the recovery to be logged")
    recovered = next(line for line in run.stderr.splitlines() if "answers again" in line)
    lost = int(re.search(r"answers again: (\d+) record\(s\) lost during the outage", recovered).group(1))
    recorded = [message_id for message_id in during if any(r.outcome == "succeeded"
                                                            for r in rows_of(store_url, message_id))]
    # two writes per attempt (start, end): an attempt is missing only when a write of it was lost
    assert len(during) - len(recorded) <= lost, (recorded, recovered)
    assert [r.outcome for r in rows_of(store_url, before)] == ["succeeded"]


def test_a_store_url_no_store_understands_is_a_usage_error(make_queue, capsys):
    url = make_queue()
    assert main(["worker", url, "--tasks", "tests.worker_tasks", "--store", "mysql://db/jobs"]) == 2
    assert "not a job store URL: 'mysql://db/jobs'" in capsys.readouterr().err
    assert main(["worker", url, "--tasks", "tests.worker_tasks", "--store", "sqlite:///x.db",
                 "--store-keep-failed", "0"]) == 2
    assert "--store-keep-failed: must be a duration > 0" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_at_start_is_logged_and_the_worker_runs_without_it(
        make_queue, sqs_client, worker):
    # Given a store on a path nobody can create (under /proc)
    url = make_queue()
    submit(sqs_client, url, "note", id="n")
    # When a worker starts with it
    run = worker(url, "--until-empty", "--store", "sqlite:////proc/no-such-dir/jobs.db")
    # Then it warns, runs its task all the same, and says what the store never got
    assert run.wait(timeout=60) == 0, run.stderr
    assert ends(run.record_path) == ["n"]
    assert "the worker runs without it" in run.stderr
    assert "unreachable" in run.stderr


def test_cancelled_messages_are_left_out_of_a_batch_task_s_call(make_queue, sqs_client, worker, sqlite_store_url,
                                                                 tmp_path):
    # Given twenty messages of a batch task (batch=25), three of them cancelled
    url = make_queue(visibility_timeout=30)
    ids = [submit(sqs_client, url, "insert_rows", id=n) for n in range(20)]
    open_store(sqlite_store_url).close()
    store = open_store(sqlite_store_url, create=False)
    for message_id in (ids[0], ids[7], ids[19]):
        control.cancel(store, message_id)
    store.close()
    # When a worker drains the queue
    run = worker(url, "--tasks", "tests.batch_tasks", "--until-empty", "--store", sqlite_store_url)
    assert run.wait(timeout=60) == 0, run.stderr
    # Then the calls got the seventeen others, and the three were deleted unrun, recorded as cancelled
    called = sorted(n for line in records(run.record_path) if line["event"] == "batch" for n in line["ids"])
    assert called == [n for n in range(20) if n not in (0, 7, 19)]
    assert [rows_of(sqlite_store_url, ids[n])[0].outcome for n in (0, 7, 19)] == ["cancelled"] * 3
    assert queue_counts(sqs_client, url) == (0, 0, 0)


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_kill_of_any_message_of_a_running_batch_stops_the_call_and_only_that_message_obeys_then(
        make_queue, sqs_client, worker, sqlite_store_url, capsys, victim):
    store_url = sqlite_store_url
    # Given a worker running one call of a batch task over three messages (it would sleep 30 s)
    url = make_queue(visibility_timeout=30)
    ids = [submit(sqs_client, url, "stall_rows_once", id=n) for n in range(3)]
    run = worker(url, "--tasks", "tests.batch_tasks", "--store", store_url)
    wait_for(lambda: [line["ids"] for line in records(run.record_path) if line["event"] == "batch"] != [], 20,
             "the batch call to start")
    [called] = [line["ids"] for line in records(run.record_path) if line["event"] == "batch"]
    assert sorted(called) == [0, 1, 2], "the three messages were not gathered into one call"
    for message_id in ids:
        wait_running(store_url, message_id)
    # When an operator kills one of them (the call's first message or another one), to be deleted
    killed = ids[called[victim]]
    kill_task(store_url, killed, "delete", capsys)
    # Then the call stops (a flag poll and a heartbeat, 1 + 1 s; margins for a loaded machine); the killed
    # message is deleted as ordered; the others were not ordered: visible again at once, they run again
    wait_for(lambda: all(any(r.outcome for r in rows_of(store_url, m)) for m in ids), 15, "the kill to be recorded")
    assert [(r.outcome, r.action) for r in rows_of(store_url, killed)] == [("killed", "deleted")], run.stderr
    others = [m for m in ids if m != killed]
    wait_for(lambda: all(len(rows_of(store_url, m)) == 2 and rows_of(store_url, m)[1].outcome for m in others),
             20, "the others to run again")
    for message_id in others:
        first, second = rows_of(store_url, message_id)
        assert (first.outcome, first.action) == ("killed", "released")
        assert (second.attempt, second.outcome, second.action) == (2, "succeeded", "deleted")
    wait_for(lambda: queue_counts(sqs_client, url) == (0, 0, 0), 10, "the queue to be empty")


def test_a_message_cancelled_while_it_waits_prefetched_is_deleted_unrun(make_queue, sqs_client, worker,
                                                                         sqlite_store_url, tmp_path, capsys):
    store_url = sqlite_store_url
    # Given a worker that received two 6 s tasks at once (--prefetch 1): one runs, the other waits behind it
    url = make_queue(visibility_timeout=30)
    ids = {name: submit(sqs_client, url, "nap", id=name, seconds=6) for name in ("a", "b")}
    run = worker(url, "--until-empty", "--prefetch", "1", "--store", store_url)
    wait_for(lambda: len(starts(run.record_path)) == 1, 20, "the first task to start")
    [running] = starts(run.record_path)
    waiting = ids["b" if running == "a" else "a"]
    assert f"received message {waiting}" in run.stderr, "the other message was not received with the first"
    # When an operator cancels the waiting message (received by the worker, not started)
    assert main(["cancel", waiting, "--store", store_url]) == 0
    assert run.wait(timeout=60) == 0, run.stderr
    # Then it never runs: deleted unrun, recorded as cancelled, the order carried out
    assert starts(run.record_path) == [running], run.stderr
    assert queue_counts(sqs_client, url) == (0, 0, 0)
    assert [(r.outcome, r.action) for r in rows_of(store_url, waiting)] == [("cancelled", "deleted")]
    store = open_store(store_url, create=False)
    assert store.flags([waiting]) == {}
    store.close()



def test_a_kill_whose_dead_letter_failed_stays_ordered_for_the_message_s_next_attempt(
        make_queue, sqs_client, worker, sqlite_store_url, capsys):
    store_url = sqlite_store_url
    # Given a queue whose redrive target is gone, and a worker running a long task from it
    url = make_queue(visibility_timeout=30, dead_letter=True, max_receive_count=5)
    sqs_client.delete_queue(QueueUrl=make_queue.dead_letter_urls[url])
    napping = submit(sqs_client, url, "nap", id="n", seconds=60)
    run = worker(url, "--store", store_url)
    wait_for(lambda: starts(run.record_path) == ["n"], 20, "the task to start")
    wait_running(store_url, napping)
    # When an operator kills it, to be dead-lettered, and the dead-letter queue cannot take it
    kill_task(store_url, napping, "dead-letter", capsys)
    wait_for(lambda: any(r.outcome for r in rows_of(store_url, napping)), 15, "the kill to be recorded")
    [row] = rows_of(store_url, napping)
    assert (row.outcome, row.action) == ("killed", "kept"), run.stderr
    # Then the message is kept (hidden, not lost), and the order is not spent: when the message comes back,
    # its next attempt is killed too and its dead-letter tried again, instead of the task running in full
    assert queue_counts(sqs_client, url) == (0, 1, 0)
    store = open_store(store_url, create=False)
    assert [(flag.kind, flag.then) for flag in store.flags([napping]).values()] == [("kill", "dead-letter")]
    store.close()
