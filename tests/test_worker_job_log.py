"""Real ``sqsmaster worker`` processes on the durable local queues: crashes, the job log, ``sqsmaster report``."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest

from sqsmaster import MessageHandler, TaskManager, open_queue
from sqsmaster.cli import main
from sqsmaster.worker.jobs import JobLog, record_from_handler

from .workerkit import WorkerRun, ends, starts, wait_for

QUICK = ["--wait-time", "1", "--sqs-timeout", "2", "--alarm-timeout", "0.5"]


@pytest.fixture(params=["sqlite", "fq"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh durable queue whose messages move to a dead-letter queue on the receive after the third."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/queue.db?queue=jobs&visibility_timeout=2&max_receive_count=3"
    return f"fq://{tmp_path}/queue?visibility_timeout=2&max_receive_count=3"


def counts(url: str) -> tuple[int, int, int]:
    attributes = open_queue(url).get_attributes()
    return (int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            int(attributes["ApproximateNumberOfMessagesDelayed"]))


def test_a_worker_killed_mid_task_leaves_the_message_to_another_worker_which_completes_it_once(durable_url,
                                                                                                 tmp_path):
    # Given a worker process running a task that hangs on its first delivery
    TaskManager(durable_url).submit("stall_once", id="s")
    job_log = tmp_path / "jobs.log"
    first = WorkerRun(durable_url, [*QUICK, "--job-log", str(job_log)], tmp_path / "record")
    wait_for(lambda: starts(tmp_path / "record"), 15, "the task to start")
    # When that worker is killed with SIGKILL mid-task, and a second worker drains the queue
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = WorkerRun(durable_url, [*QUICK, "--until-empty", "--job-log", str(job_log)], tmp_path / "record")
    assert second.wait(30) == 0, second.stderr
    # Then the message came back once its lease ran out and ran to its end once, in the second worker
    assert (starts(tmp_path / "record"), ends(tmp_path / "record")) == (["s", "s"], ["s"])
    [record] = JobLog(job_log).records()  # the killed worker wrote nothing for its attempt
    assert (record.task, record.attempt, record.outcome, record.pid) == ("stall_once", 2, "succeeded",
                                                                        second.process.pid)
    assert counts(durable_url) == (0, 0, 0)


def test_a_task_stopped_at_shutdown_is_recorded_as_released(tmp_path):
    # Given a worker running a 30 s task with a half-second grace
    url = f"sqlite://{tmp_path}/queue.db?queue=jobs"
    TaskManager(url).submit("nap", id="n", seconds=30)
    job_log = tmp_path / "jobs.log"
    worker = WorkerRun(url, [*QUICK, "--grace", "0.5", "--job-log", str(job_log)], tmp_path / "record")
    wait_for(lambda: starts(tmp_path / "record"), 15, "the task to start")
    # When the worker gets SIGTERM
    worker.send_signal(signal.SIGTERM)
    # Then it exits cleanly, the attempt is in the job log as released, and the message is visible again
    assert worker.wait(15) == 0
    [record] = JobLog(job_log).records()
    assert (record.task, record.outcome) == ("nap", "released")
    assert "WorkerShutdown" in (record.exception or "")
    assert counts(url) == (1, 0, 0)


def test_the_job_log_of_a_worker_pool_is_read_back_by_sqsmaster_report(tmp_path, capsys):
    # Given quick tasks, a task that always fails (two retries) and a process-isolated task holding 64 MB
    url = f"sqlite://{tmp_path}/queue.db?queue=jobs&max_receive_count=3"
    with TaskManager(url) as manager:
        submitted = {manager.submit("note", id=f"q{n}")["MessageId"] for n in range(3)}
        submitted.add(manager.submit("fail_fixed", id="f")["MessageId"])
        submitted.add(manager.submit("hog", id="h", megabytes=64)["MessageId"])
    job_log = tmp_path / "jobs.log"
    # When two worker processes drain the queue into one job log
    worker = WorkerRun(url, [*QUICK, "--until-empty", "--concurrency", "2", "--job-log", str(job_log)],
                       tmp_path / "record")
    assert worker.wait(30) == 0, worker.stderr
    # Then every attempt is one record, with its outcome, times, worker and the failure's traceback
    records = JobLog(job_log).records()
    assert {r.message_id for r in records} == submitted
    assert sorted((r.task, r.attempt, r.outcome) for r in records if r.task in ("fail_fixed", "hog")) == [
        ("fail_fixed", 1, "failed"), ("fail_fixed", 2, "failed"), ("fail_fixed", 3, "dead-lettered"),
        ("hog", 1, "succeeded")]
    assert all(r.submitted <= r.started <= r.ended and r.host and r.pid != worker.process.pid for r in records)
    failed = next(r for r in records if r.outcome == "failed")
    assert failed.exception == "RuntimeError: always fails" and "Traceback" in (failed.traceback or "")
    # and the process-isolated task's peak memory is its own process's, 64 MB above the worker's
    hog = next(r for r in records if r.task == "hog")
    note = next(r for r in records if r.task == "note")
    assert (hog.peak_memory or 0) - (note.peak_memory or 0) > 60 * 2**20
    # When sqsmaster report reads the log
    assert main(["report", str(job_log), "--csv", str(tmp_path / "jobs.csv"),
                 "--timeline", str(tmp_path / "timeline.png")]) == 0
    # Then it summarises it (counting the worker processes that ran something: on a busy machine one of the
    # two may have started after the other had taken every message) and writes one CSV row per attempt and a PNG
    assert f"7 attempts by {len({r.pid for r in records})} worker(s)" in capsys.readouterr().out
    with open(tmp_path / "jobs.csv") as file:
        assert len(list(csv.DictReader(file))) == 7
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("scheme", ["sqlite", "fq"])
def test_status_peek_and_purge_work_on_the_durable_queues(scheme, tmp_path, capsys):
    # Given a durable queue with two messages
    url = f"sqlite://{tmp_path}/q.db?queue=work" if scheme == "sqlite" else f"fq://{tmp_path}/work"
    with TaskManager(url) as manager:
        manager.submit("note", id="a")
        manager.submit("note", id="b")
    # When the operator looks at it, peeks, and purges it
    assert main(["status", url]) == 0
    assert "visible    2" in capsys.readouterr().out
    assert main(["peek", url]) == 0
    peeked = capsys.readouterr().out
    assert counts(url) == (2, 0, 0)  # peeking handed them back
    assert main(["purge", url]) == 0
    # Then the bodies were shown and the queue is empty
    assert '"id": "a"' in peeked and '"id": "b"' in peeked
    assert counts(url) == (0, 0, 0)


def test_a_worker_process_refuses_a_mem_queue_it_could_never_share(capsys):
    assert main(["worker", "mem://work", "--tasks", "tests.worker_tasks"]) == 2
    assert "mem:// queue lives inside one process" in capsys.readouterr().err


class _Crash(MessageHandler):
    isolation = "process"

    def run(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does


class _Hog(MessageHandler):
    isolation = "process"

    def run(self) -> None:
        block = b"\x01" * (48 * 2**20)
        assert block


def test_a_task_process_killed_by_a_signal_is_recorded_as_killed_and_memory_is_measured_per_task():
    # Given two messages: one whose task process is SIGKILLed, one whose task holds 48 MB
    manager = TaskManager("mem://records")
    manager.submit("crash")
    manager.submit("hog")
    records = []
    # When each runs under process isolation and is recorded
    for task, _, message in manager.task_generator(wait_time=0, sqs_timeout=5, until_empty=True):
        with (_Crash if task == "crash" else _Hog)(message, sqs_timeout=5, alarm_timeout=1) as handler:
            handler.run()
        records.append(record_from_handler(handler, task=task))
        message.delete()
    # Then the crash is "killed", naming the signal, and the hog's peak is its own process's
    crash, hog = sorted(records, key=lambda r: r.task or "")
    assert (crash.outcome, hog.outcome) == ("killed", "succeeded")
    assert "SIGKILL" in (crash.exception or "")
    assert (hog.peak_memory or 0) - (crash.peak_memory or 0) > 40 * 2**20
