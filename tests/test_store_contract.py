"""The job store contract: every store (sqlite://, dynamodb://) keeps the same promises.

Times are passed in (``now``), so nothing here sleeps.
"""

from __future__ import annotations

import threading

import pytest

from sqsmaster.store import AttemptRow, Flag, JobFilter, WorkerRow, open_store

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite"])
def store(request, tmp_path):
    opened = open_store(f"sqlite:///{tmp_path}/jobs.db")
    yield opened
    opened.close()


def row(message_id: str, started: float = NOW, attempt: int = 1, **changes) -> AttemptRow:
    fields = dict(task="solve", queue="https://q/1", host="h1", pid=7, started=started, lease=60.0)
    fields.update(changes)
    return AttemptRow(message_id, attempt, **fields)


def test_an_attempt_written_twice_is_one_row_with_the_last_values(store):
    store.put_attempt(row("m1"))
    store.put_attempt(row("m1", outcome="succeeded", ended=NOW + 3, runtime=3.0))
    [only] = store.attempts_of("m1")
    assert (only.outcome, only.runtime) == ("succeeded", 3.0)


def test_attempts_of_a_message_come_oldest_first(store):
    for attempt in (3, 1, 2):
        store.put_attempt(row("m1", NOW + attempt, attempt=attempt, outcome="failed"))
    assert [r.attempt for r in store.attempts_of("m1")] == [1, 2, 3]
    assert store.attempts_of("nobody") == []


def test_heartbeats_update_only_running_rows(store):
    store.put_attempt(row("run"))
    store.put_attempt(row("done", outcome="succeeded", ended=NOW + 1))
    store.heartbeat("run", 1, NOW + 30, 2)
    store.heartbeat("done", 1, NOW + 30, 2)
    store.heartbeat("unknown", 1, NOW + 30, 2)
    assert store.attempts_of("run")[0].last_heartbeat == NOW + 30
    assert store.attempts_of("done")[0].last_heartbeat is None
    assert store.attempts_of("unknown") == []


def test_a_running_row_without_a_heartbeat_for_its_lease_is_stale_not_running(store):
    store.put_attempt(row("fresh", NOW + 100))
    store.put_attempt(row("old", NOW))
    store.heartbeat("fresh", 1, NOW + 150, 1)
    now = NOW + 200  # old: 200 s since it started, lease 60
    assert [r.message_id for r in store.attempts(JobFilter(status="running"), now).rows] == ["fresh"]
    assert [r.message_id for r in store.attempts(JobFilter(status="stale"), now).rows] == ["old"]


def test_pages_walk_every_matching_row_once_newest_first(store):
    for i in range(230):
        store.put_attempt(row(f"m{i:03d}", NOW + i, task="a" if i % 3 else "b",
                              outcome="failed" if i % 2 else "succeeded", ended=NOW + i + 1))
    where = JobFilter(task="a", status="failed")
    seen, cursor = [], None
    while True:
        page = store.attempts(where, NOW + 500, limit=25, cursor=cursor)
        seen += [r.message_id for r in page.rows]
        cursor = page.cursor
        if cursor is None:
            break
    expected = [f"m{i:03d}" for i in reversed(range(230)) if i % 3 and i % 2]
    assert seen == expected
    assert store.count(where, NOW + 500) == len(expected)


def test_filters_by_text_exception_queue_and_time(store):
    store.put_attempt(row("m1", NOW, kwargs='{"user": "alice"}', outcome="failed", exception="ValueError: bad",
                          queue="q1"))
    store.put_attempt(row("m2", NOW + 10, kwargs='{"user": "bob"}', outcome="failed", exception="KeyError: x",
                          queue="q2"))
    ids = lambda where: [r.message_id for r in store.attempts(where, NOW + 20).rows]  # noqa: E731
    assert ids(JobFilter(text="alice")) == ["m1"]
    assert ids(JobFilter(exception="KeyError")) == ["m2"]
    assert ids(JobFilter(queue="q1")) == ["m1"]
    assert ids(JobFilter(since=NOW + 5)) == ["m2"]
    assert ids(JobFilter(worker="h1:7")) == ["m2", "m1"]
    assert ids(JobFilter(worker="h2:7")) == []


def test_workers_are_listed_most_recently_seen_first(store):
    store.put_worker(WorkerRow("h1", 1, NOW, NOW + 5, version="1", concurrency=2))
    store.put_worker(WorkerRow("h2", 2, NOW, NOW + 9))
    store.put_worker(WorkerRow("h1", 1, NOW, NOW + 20, busy=1))
    assert [(w.worker, w.busy) for w in store.workers()] == [("h1:1", 1), ("h2:2", 0)]


def test_flags_are_pending_until_done(store):
    store.set_flag(Flag("m1", "kill", "ops@host", NOW, then="release"))
    store.set_flag(Flag("m2", "cancel", "ops@host", NOW))
    assert {k: f.kind for k, f in store.flags(["m1", "m2", "m3"]).items()} == {"m1": "kill", "m2": "cancel"}
    assert store.flags(["m1"])["m1"].then == "release"
    store.flag_done("m1", NOW + 1)
    assert set(store.flags(["m1", "m2"])) == {"m2"}


def test_a_claim_has_one_holder_until_it_expires_or_is_released(store):
    assert store.claim("slot", "a", NOW, 10)
    assert not store.claim("slot", "b", NOW + 5, 10)
    assert store.claim("slot", "a", NOW + 5, 10)  # the holder may claim again (idempotent)
    assert store.renew("slot", "a", NOW + 14, 10)
    assert not store.renew("slot", "b", NOW + 14, 10)
    assert store.holder("slot", NOW + 23) == "a"
    assert store.holder("slot", NOW + 25) is None
    assert store.claim("slot", "b", NOW + 25, 10)
    assert not store.release("slot", "a")
    assert store.release("slot", "b")
    assert store.holder("slot", NOW + 26) is None


def test_many_threads_racing_for_a_claim_have_exactly_one_winner(store):
    wins, start = [], threading.Barrier(8)

    def race(owner: str) -> None:
        start.wait()
        if store.claim("race", owner, NOW, 30):
            wins.append(owner)

    threads = [threading.Thread(target=race, args=(f"o{i}",)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1 and store.holder("race", NOW) == wins[0]


def test_expiry_keeps_failures_longer_than_successes_and_never_drops_running_rows(store):
    store.put_attempt(row("ok", NOW, outcome="succeeded", ended=NOW))
    store.put_attempt(row("bad", NOW, outcome="failed", ended=NOW))
    store.put_attempt(row("running", NOW))
    assert store.expire(NOW + 2 * 86400, success_ttl=86400, failure_ttl=7 * 86400) == 1
    assert sorted(r.message_id for r in store.attempts(JobFilter(), NOW).rows) == ["bad", "running"]
    assert store.expire(NOW + 8 * 86400, success_ttl=86400, failure_ttl=7 * 86400) == 1
    assert [r.message_id for r in store.attempts(JobFilter(), NOW).rows] == ["running"]


def test_actions_are_an_audit_trail_newest_first(store):
    from sqsmaster.store import ActionRow

    store.record_action(ActionRow(NOW, "ops", "kill", "m1"))
    store.record_action(ActionRow(NOW + 1, "ops", "requeue", "solve x ValueError", count=12))
    assert [(a.what, a.count) for a in store.actions()] == [("requeue", 12), ("kill", 1)]


def test_a_schedules_fired_slot_only_moves_forward(store):
    from sqsmaster.store import FiredRow

    # Given nothing recorded
    assert store.fired("nightly") is None
    # When slots are recorded out of order (a slow scheduler writes after a faster one)
    assert store.mark_fired(FiredRow("nightly", NOW + 600, NOW + 601, "a"))
    assert not store.mark_fired(FiredRow("nightly", NOW, NOW + 602, "b"))
    assert not store.mark_fired(FiredRow("nightly", NOW + 600, NOW + 603, "c"))  # the same slot twice: first wins
    # Then the latest slot stays, with who sent it
    assert store.fired("nightly") == FiredRow("nightly", NOW + 600, NOW + 601, "a")
    assert store.mark_fired(FiredRow("nightly", NOW + 1200, NOW + 1201, "b"))
    assert store.fired("nightly").slot == NOW + 1200
    assert store.fired("hourly") is None
