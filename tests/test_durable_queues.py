"""sqlite:// and fq:// under real processes: kill -9 mid-task loses nothing; competing consumers share fairly."""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqsmaster import ConfigurationError, LeaseLost, TaskManager, open_queue
from sqsmaster.producer import build_entry
from sqsmaster.worker.jobs import JobLog

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "fq"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh durable queue URL with a 2 s visibility timeout."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/queue.db?queue=jobs&visibility_timeout=2"
    return f"fq://{tmp_path}/queue?visibility_timeout=2"


def start_consumer(url: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    # -m from the project root, so the consumer imports this checkout's sqsmaster
    return subprocess.Popen([sys.executable, "-m", "tests.durable_consumer", url, str(tmp_path / "events"),
                             str(tmp_path / "jobs.log"), *extra], cwd=ROOT)


def events(tmp_path: Path) -> list[tuple[str, str, str, str]]:
    path = tmp_path / "events"
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []  # type: ignore


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def counts(url: str) -> tuple[int, int, int]:
    attributes = open_queue(url).get_attributes()
    return (int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            int(attributes["ApproximateNumberOfMessagesDelayed"]))


def test_a_consumer_killed_mid_task_loses_nothing_and_the_task_completes_once_elsewhere(durable_url, tmp_path):
    # Given a task that stalls on its first attempt, running in a consumer process
    TaskManager(durable_url).submit("Stall")
    first = start_consumer(durable_url, tmp_path)
    assert wait_for(lambda: any(e[3] == "start" for e in events(tmp_path)), 15), "the task never started"
    # When that process is killed with SIGKILL mid-task, and another consumer drains the queue
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.time()
    second = start_consumer(durable_url, tmp_path, "--until-empty")
    assert second.wait(30) == 0
    # Then the message came back after its lease ran out, and ran to completion once, in the second process
    done = [e for e in events(tmp_path) if e[3] == "done"]
    assert [e[0] for e in done] == [str(second.pid)]
    [record] = JobLog(tmp_path / "jobs.log").records()
    assert (record.pid, record.attempt, record.outcome) == (second.pid, 2, "succeeded")
    assert record.started - killed_at < 4  # the 2 s lease, plus a consumer's start-up
    assert counts(durable_url) == (0, 0, 0)


def test_two_consumers_drain_two_thousand_messages_with_no_duplicates_and_no_losses(durable_url, tmp_path):
    # Given 2,000 quick tasks
    queue = open_queue(durable_url)
    for start in range(0, 2000, 10):
        queue.send_batch([build_entry("Quick", {"n": n}, {}, entry_id=str(n)) for n in range(start, start + 10)])
    # When two consumer processes drain the queue at once
    consumers = [start_consumer(durable_url, tmp_path, "--until-empty", "--batch", "10", "--sqs-timeout", "60")
                 for _ in range(2)]
    assert [c.wait(120) for c in consumers] == [0, 0]
    # Then every message was done exactly once, and nothing is left
    done = collections.Counter(e[1] for e in events(tmp_path) if e[3] == "done")
    assert len(done) == 2000
    assert max(done.values()) == 1
    assert counts(durable_url) == (0, 0, 0)


def test_options_apply_when_the_queue_is_created_and_a_conflicting_reopen_is_refused(durable_url):
    # Given a queue created with a 2 s visibility timeout
    open_queue(durable_url).create()  # type: ignore[attr-defined]
    # When it is opened again without options, and with another visibility timeout
    plain = open_queue(durable_url.replace("visibility_timeout=2", "delay_seconds=0"))
    # Then the first sees the queue's own attributes, and the second is refused with the reason
    assert plain.get_attributes()["VisibilityTimeout"] == "2"
    with pytest.raises(ConfigurationError, match="visibility_timeout=2"):
        open_queue(durable_url.replace("visibility_timeout=2", "visibility_timeout=7"))
    with pytest.raises(ConfigurationError, match="unknown queue URL option"):
        open_queue(durable_url + "&visibilty_timeout=3")


def test_send_many_inserts_any_number_in_bulk(durable_url):
    queue = open_queue(durable_url)
    ids = queue.send_many(build_entry("Quick", {"n": n}, {}) for n in range(1234))
    assert len(set(ids)) == 1234
    assert counts(durable_url) == (1234, 0, 0)


def test_fq_release_all_hands_back_every_lease_and_keeps_the_tallies(tmp_path):
    # Given a file queue with 5 messages, 2 deleted and 3 leased for a long time
    queue = open_queue(f"fq://{tmp_path}/q?visibility_timeout=600")
    queue.send_many(build_entry("Quick", {"n": n}, {}) for n in range(5))
    messages = queue.receive(10)
    for message in messages[:2]:
        message.delete()
    # When every lease is released
    released = queue.release_all()
    # Then the 3 come back at once, received a second time, and their old leases are gone
    again = queue.receive(10)
    assert released == 3
    assert sorted(m.message_id for m in again) == sorted(m.message_id for m in messages[2:])
    assert {m.receive_count for m in again} == {2}
    with pytest.raises(LeaseLost):
        messages[2].change_visibility(VisibilityTimeout=10)
    assert (queue.inserted, queue.completed) == (5, 2)
    queue.rezero()
    assert (queue.inserted, queue.completed) == (0, 0)


def test_consumers_killed_at_random_moments_lose_nothing(durable_url, tmp_path):
    # Given 200 tasks of 10 ms and a consumer that is killed with SIGKILL at a random moment, three times over
    queue = open_queue(durable_url)
    queue.send_many(build_entry("Sleep", {"seconds": 0.01, "n": n}, {}) for n in range(200))
    rng = random.Random(5)
    for _ in range(3):
        consumer = start_consumer(durable_url, tmp_path, "--batch", "10")
        wait_for(lambda: len(events(tmp_path)) > 0, 10)
        time.sleep(rng.uniform(0.05, 0.3))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
    # When a last consumer drains the queue
    assert start_consumer(durable_url, tmp_path, "--until-empty", "--batch", "10").wait(60) == 0
    # Then every task ran to the end at least once (a task killed mid-run may run again), and nothing is left
    done = {e[1] for e in events(tmp_path) if e[3] == "done"}
    assert len(done) == 200
    assert counts(durable_url) == (0, 0, 0)
    if durable_url.startswith("sqlite"):
        with sqlite3.connect(str(tmp_path / "queue.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_fq_removes_what_a_sender_killed_mid_write_left_behind(tmp_path):
    # Given a half-written message a killed sender left in tmp/ two hours ago, and a fresh one
    open_queue(f"fq://{tmp_path}/q").create()  # type: ignore[attr-defined]
    old, fresh = tmp_path / "q" / "tmp" / "old", tmp_path / "q" / "tmp" / "fresh"
    old.write_text('{"bo')
    fresh.write_text('{"bo')
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    # When the queue is opened again
    queue = open_queue(f"fq://{tmp_path}/q")
    # Then the old one is gone, the one that may still be being written stays, and neither is a message
    assert (old.exists(), fresh.exists()) == (False, True)
    assert counts(queue.url) == (0, 0, 0)
