"""Task locks: ``@task(lock=True)`` / ``@task(lock_key=...)`` never let two runs overlap, and a message that
finds its lock held comes back later without counting as a failure (no dead-lettering by lock waits).

Real worker processes on moto SQS over HTTP share one sqlite:// job store.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqsmaster import Registry
from sqsmaster.store import StoreError, open_store
from sqsmaster.worker.events import AttemptStart
from sqsmaster.worker.locks import EXPIRY_MARGIN, LOCK_TTL_LEASES, TaskLocks, lock_key

from .conftest import queue_counts
from .workerkit import records, submit, worker_factory

FAST = ["--sqs-timeout", "4", "--wait-time", "1", "--tasks", "tests.periodic_tasks"]


@pytest.fixture
def worker(tmp_path):
    yield from worker_factory(tmp_path, FAST)


def runs(path: Any) -> list[tuple[float, float, dict]]:
    """``(start, end, start record)`` of every run, by start time."""
    lines = records(path)
    ends = {line["id"]: line["at"] for line in lines if line["event"] == "end"}
    return sorted((line["at"], ends[line["id"]], line) for line in lines if line["event"] == "start")


def overlapping(intervals: list[tuple[float, float, dict]]) -> list[tuple[str, str]]:
    return [(a[2]["id"], b[2]["id"]) for a, b in zip(intervals, intervals[1:]) if b[0] < a[1]]


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_two_workers_run_ten_locked_tasks_one_at_a_time_and_dead_letter_none(kind, make_queue, sqs_client, worker,
                                                                             tmp_path, make_store_url):
    # Given a queue whose redrive policy dead-letters a message at its 2nd receive, ten messages of a locked
    # task (0.3 s each), and two workers on one job store (a sqlite file, or a DynamoDB table on moto)
    url = make_queue(dead_letter=True, max_receive_count=2)
    ids = [f"x{index}" for index in range(10)]
    for one in ids:
        submit(sqs_client, url, "exclusive", id=one)
    store = make_store_url(kind)
    workers = [worker(url, "--store", store, "--until-empty") for _ in range(2)]
    # When both work until the queue is empty
    for run in workers:
        assert run.wait(timeout=90) == 0, run.stderr
    # Then all ten ran, once each, never two at once
    done = runs(tmp_path / "records.jsonl")
    assert sorted(line["id"] for _, _, line in done) == ids
    assert overlapping(done) == []
    # And the lock made messages wait, yet none was dead-lettered
    assert "held by" in workers[0].stderr + workers[1].stderr
    assert queue_counts(sqs_client, make_queue.dead_letter_urls[url]) == (0, 0, 0)


def test_a_lock_key_serialises_runs_per_key_only(make_queue, sqs_client, worker, tmp_path):
    # Given six messages for two users of a task locked per user, and two workers
    url = make_queue(dead_letter=True, max_receive_count=2)
    for index in range(6):
        submit(sqs_client, url, "per_user", id=f"u{index}", user="ann" if index % 2 else "bob", seconds=0.5)
    store = f"sqlite:///{tmp_path}/jobs.db"
    workers = [worker(url, "--store", store, "--until-empty") for _ in range(2)]
    for run in workers:
        assert run.wait(timeout=90) == 0, run.stderr
    # Then each user's runs never overlap, and all six ran
    done = runs(tmp_path / "records.jsonl")
    assert len(done) == 6
    for user in ("ann", "bob"):
        assert overlapping([run for run in done if run[2]["user"] == user]) == []
    assert queue_counts(sqs_client, make_queue.dead_letter_urls[url]) == (0, 0, 0)


def test_a_worker_with_a_locked_task_and_no_store_refuses_to_start(make_queue, worker):
    run = worker(make_queue())
    assert run.wait(timeout=30) == 2
    assert "take a lock, which lives in the job store: give the worker --store URL" in run.stderr


# -- the lock's life inside one worker process, on an injected clock --

def locked_spec(**options: Any) -> Any:
    registry = Registry()
    return registry.register(lambda user=None: None, name="sync", lock=True, **options)


class Message:
    """What TaskLocks reads of a received message."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.attributes: dict[str, str] = {}


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = 1_800_000_000.0, 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class FlakyStore:
    """The sqlite store, whose renewals can be made to fail (an outage): our own fake, around the real one."""

    def __init__(self, real: Any) -> None:
        self.real, self.down = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def renew(self, *args: Any) -> bool:
        if self.down:
            raise StoreError("job store unreachable")
        return bool(self.real.renew(*args))


def start_of(message_id: str) -> AttemptStart:
    return AttemptStart(message_id, "q", "sync", 1, {}, 0.0, 0.0, 30.0, "signal")


def test_a_lock_that_cannot_be_renewed_before_it_expires_stops_its_task(tmp_path):
    # Given a task holding its lock (lease 30 s: the lock lasts 90 s past each renewal)
    clocks, store = Clocks(), FlakyStore(open_store(f"sqlite:///{tmp_path}/jobs.db"))
    locks = TaskLocks(store, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    key = locks.take(Message("m1"), locked_spec(), {}, 1, 30.0)
    assert key == "lock:sync"
    held = next(iter(locks._held.values()))
    # When the store is down for the renewals of the whole time to live
    store.down = True
    for _ in range(6):
        clocks.advance(LOCK_TTL_LEASES * 30.0 / 6)
        locks.renew(held)
        if clocks.mono < 100.0 + LOCK_TTL_LEASES * 30.0 - EXPIRY_MARGIN:
            assert locks.keep_running(start_of("m1"))  # Then the task runs on while the lock surely holds
    # Then once it may have expired, the task is stopped (another worker may hold the lock by now)
    assert not locks.keep_running(start_of("m1"))
    assert locks.keep_running(start_of("other"))
    locks.close(1)


def test_a_renewed_lock_holds_and_a_released_one_is_free_at_once(tmp_path):
    clocks, store = Clocks(), open_store(f"sqlite:///{tmp_path}/jobs.db")
    locks = TaskLocks(store, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    key = locks.take(Message("m1"), locked_spec(), {}, 1, 30.0)
    held = next(iter(locks._held.values()))
    for _ in range(20):  # 20 renewals over 300 s: well past the first time to live
        clocks.advance(15)
        locks.renew(held)
        assert locks.keep_running(start_of("m1"))
    assert store.holder("lock:sync", clocks.wall) is not None
    locks.release(key)
    assert store.holder("lock:sync", clocks.wall) is None
    locks.close(1)


def test_lock_keys_name_the_task_and_the_values_of_the_key_kwargs():
    registry = Registry()
    whole = registry.register(lambda user, n=1: None, name="whole", lock=True)
    keyed = registry.register(lambda user, n=1: None, name="keyed", lock_key=("user",))
    assert lock_key(whole, {"user": "ann", "n": 2}) == "lock:whole"
    assert lock_key(keyed, {"user": "ann", "n": 2}) == lock_key(keyed, {"user": "ann", "n": 3}) == 'lock:keyed:"ann"'
    assert lock_key(keyed, {"user": "bob"}) != lock_key(keyed, {"user": "ann"})
    long = lock_key(keyed, {"user": "x" * 5000})
    assert long.startswith("lock:keyed:sha256:") and len(long) < 100


@pytest.mark.parametrize("options, error", [
    ({"lock_key": ()}, "lock_key= takes kwarg names"),
    ({"lock_key": ("user", 3)}, "lock_key= takes kwarg names"),
    ({"lock_key": ("account",)}, "lock_key names account, which it takes no kwarg of"),
    ({"lock": "yes"}, "lock= takes True or False"),
    ({"lock_key": ("user",), "batch": 10}, "lock_key cannot go with batch"),
    ({"lock": True, "lock_retry": 0}, "lock_retry= takes whole seconds in [1, 900]"),
    ({"lock": True, "lock_retry": 901}, "lock_retry= takes whole seconds in [1, 900]"),
])
def test_bad_lock_options_are_refused_at_registration(options, error):
    from sqsmaster import ConfigurationError

    with pytest.raises(ConfigurationError, match=error.replace("[", r"\[").replace("]", r"\]")):
        Registry().register(lambda user=None: None, name="sync", **options)


def test_a_lock_whose_worker_was_killed_expires_and_the_task_runs_elsewhere(make_queue, sqs_client, tmp_path):
    from .workerkit import WorkerRun, wait_for

    # Given two workers (visibility 4 s: a lock lasts 12 s past each renewal), one running a long locked task
    url, store = make_queue(), f"sqlite:///{tmp_path}/jobs.db"
    args = ["--sqs-timeout", "4", "--wait-time", "1", "--tasks", "tests.periodic_tasks", "--store", store]
    path = tmp_path / "records.jsonl"
    workers = [WorkerRun(url, args, path) for _ in range(2)]
    try:
        for run in workers:
            run.wait_until_ready(timeout=60)
        submit(sqs_client, url, "exclusive", id="long", seconds=60)
        [first] = wait_for(lambda: [line for line in records(path) if line["event"] == "start"], 60, "a start")
        [holder] = [run for run in workers if run.process.pid == first["pid"]]
        [other] = [run for run in workers if run is not holder]
        # When the worker running it is killed with SIGKILL (nothing released)
        holder.kill()
        # Then the message comes back to the other, finds the dead holder's lock still held, and runs once
        # it expired
        starts = wait_for(lambda: [line for line in records(path)
                                   if line["event"] == "start" and line["pid"] == other.process.pid], 60,
                          "the task to start on the other worker")
        assert [line["id"] for line in starts] == ["long"]
        held = [line for line in other.stderr.splitlines() if "held by" in line]
        assert held and all(f":{holder.process.pid}:" in line for line in held)  # the dead worker's attempt
    finally:
        for run in workers:
            run.kill()


@pytest.mark.parametrize("fifo", [False, True])
def test_a_message_that_finds_its_lock_held_waits_without_spending_a_receive(make_queue, sqs_client, tmp_path,
                                                                             fifo):
    from sqsmaster import open_queue

    # Given a message of a locked task, received, and its lock held by another attempt
    url = make_queue(fifo=fifo)
    extra = {"MessageGroupId": "g", "MessageDeduplicationId": "d"} if fifo else {}
    sqs_client.send_message(QueueUrl=url, MessageBody='{"task": "sync", "kwargs": {}}', **extra)
    [message] = open_queue(url).receive(1, wait_time=1, visibility_timeout=30)
    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    assert store.claim("lock:sync", "elsewhere:1:m0:1", Clocks().wall, 60)
    locks = TaskLocks(store, clock=lambda: Clocks().wall)
    # When the worker tries to take the lock
    assert locks.take(message, locked_spec(lock_retry=7), {}, 1, 30.0) is False
    # Then on a standard queue the message was re-sent with the delay (the original deleted): no receive spent;
    # on a FIFO queue (no per-message delay) it is handed back for the delay instead
    assert queue_counts(sqs_client, url) == ((0, 1, 0) if fifo else (0, 0, 1))
    locks.close(1)


def test_a_message_whose_lock_the_store_cannot_answer_for_waits_too(make_queue, sqs_client, tmp_path):
    from sqsmaster import open_queue

    class DownStore:
        def claim(self, *args: Any) -> bool:
            raise StoreError("job store sqlite:///x: database is locked")

    url = make_queue()
    submit(sqs_client, url, "sync")
    [message] = open_queue(url).receive(1, wait_time=1, visibility_timeout=30)
    assert TaskLocks(DownStore()).take(message, locked_spec(), {}, 1, 30.0) is False  # type: ignore[arg-type]
    assert queue_counts(sqs_client, url) == (0, 0, 1)


def test_on_a_durable_local_queue_a_lock_held_message_comes_back_after_lock_retry(tmp_path):
    import time

    from sqsmaster import open_queue

    from .workerkit import wait_for

    # Given a message of a locked task on a sqlite:// queue, received, and its lock held elsewhere
    queue = open_queue(f"sqlite:///{tmp_path}/queue.db?queue=jobs")
    from sqsmaster.backends import SendEntry

    queue.send(SendEntry('{"task": "sync", "kwargs": {}}'))
    [message] = queue.receive(1, visibility_timeout=60)
    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    store.claim("lock:sync", "elsewhere:1:m0:1", time.time(), 60)
    # When the worker tries to take the lock
    asked = time.monotonic()
    assert TaskLocks(store).take(message, locked_spec(lock_retry=2), {}, 1, 30.0) is False
    # Then the message comes back no sooner than lock_retry later (a bound load cannot break: only lateness),
    # at receive count 1: no receive spent
    [again] = wait_for(lambda: queue.receive(1, visibility_timeout=60), 30, "the message to come back")
    assert time.monotonic() - asked >= 2
    assert (again.body, again.receive_count) == (message.body, 1)
