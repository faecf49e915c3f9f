"""The job store contract: every store (sqlite://, dynamodb://) keeps the same promises.

Times are passed in (``now``), so nothing here sleeps.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
from typing import Any

import pytest

from sqsmaster.store import AttemptRow, Flag, JobFilter, StoreError, WorkerRow, open_store

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "dynamodb"])
def kind(request) -> str:
    return str(request.param)


@pytest.fixture
def store(kind, make_store_url):
    opened = open_store(make_store_url(kind))
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


def test_a_late_start_write_never_turns_a_finished_attempt_back_to_running(store):
    # A start write that timed out (an ambiguous outcome) may land after the end was written.
    store.put_attempt(row("m1", outcome="succeeded", ended=NOW + 1))
    store.put_attempt(row("m1"))
    assert [r.outcome for r in store.attempts_of("m1")] == ["succeeded"]
    assert store.attempts(JobFilter(status="running"), NOW).rows == []


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
    counts = [store.count(where, NOW + 20) for where in (JobFilter(text="alice"), JobFilter(exception="Error"),
              JobFilter(queue="q2", until=NOW + 10), JobFilter(until=NOW + 9), JobFilter(worker="h1:7"))]
    assert counts == [1, 2, 1, 1, 2]


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


def test_a_flag_done_for_an_order_spends_that_order_only_not_a_newer_one(store):
    store.set_flag(Flag("m1", "kill", "ops@host", NOW, then="release"))
    store.set_flag(Flag("m1", "cancel", "ops@host", NOW + 2))  # a newer order on the same message
    store.flag_done("m1", NOW + 3, ordered=NOW)  # the kill's end: its own order is no longer there
    assert store.flags(["m1"])["m1"].kind == "cancel"
    store.flag_done("m1", NOW + 4, ordered=NOW + 2)
    assert store.flags(["m1"]) == {}


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


def test_sqlite_expiry_drops_old_orders_and_workers_as_dynamodb_s_ttl_does(make_store_url):
    store = open_store(make_store_url("sqlite"))
    store.set_flag(Flag("old", "cancel", "ops", NOW, "delete"))
    store.set_flag(Flag("new", "cancel", "ops", NOW + 6 * 86400, "delete"))
    store.put_worker(WorkerRow("h1", 1, started=NOW, last_seen=NOW))
    store.put_worker(WorkerRow("h1", 2, started=NOW, last_seen=NOW + 6 * 86400))
    store.expire(NOW + 8 * 86400, success_ttl=86400, failure_ttl=7 * 86400)
    assert set(store.flags(["old", "new"])) == {"new"}
    assert [w.pid for w in store.workers()] == [2]


def test_actions_are_an_audit_trail_newest_first(store):
    from sqsmaster.store import ActionRow

    store.record_action(ActionRow(NOW, "ops", "kill", "m1"))
    store.record_action(ActionRow(NOW + 1, "ops", "requeue", "solve x ValueError", count=12))
    assert [(a.what, a.count) for a in store.actions()] == [("requeue", 12), ("kill", 1)]


def _claim_from_a_process(url: str, owner: str, start: Any, results: Any) -> None:
    store = open_store(url, create=False)
    start.wait(timeout=60)
    results.put((owner, store.claim("race", owner, NOW, 30)))
    store.close()


def test_processes_racing_for_a_claim_have_exactly_one_winner(kind, make_store_url):
    # Given a store, and six processes of its own (as six hosts would have), each with its own connection
    url = make_store_url(kind)
    open_store(url).close()
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(6), context.Queue()
    racers = [context.Process(target=_claim_from_a_process, args=(url, f"p{i}", start, results)) for i in range(6)]
    [racer.start() for racer in racers]
    # When they all claim one key at once
    answers = dict(results.get(timeout=90) for _ in racers)
    [racer.join(30) for racer in racers]
    # Then exactly one won, and it is the holder
    winners = [owner for owner, won in answers.items() if won]
    assert len(answers) == 6 and len(winners) == 1
    assert open_store(url).holder("race", NOW) == winners[0]


def test_a_cursor_walks_on_where_it_was_when_rows_arrive_between_pages(store):
    # Given 30 rows, and the first page of 10 read
    for i in range(30):
        store.put_attempt(row(f"m{i:02d}", NOW + i))
    first = store.attempts(JobFilter(), NOW + 100, limit=10)
    # When newer rows arrive (and one older than every row), then the walk goes on
    for i in range(30, 35):
        store.put_attempt(row(f"m{i:02d}", NOW + i))
    store.put_attempt(row("early", NOW - 1))
    seen, cursor = [r.message_id for r in first.rows], first.cursor
    while cursor is not None:
        page = store.attempts(JobFilter(), NOW + 100, limit=10, cursor=cursor)
        seen += [r.message_id for r in page.rows]
        cursor = page.cursor
    # Then every row older than the first page comes once, in order, and the newer ones wait for a new walk
    assert seen == [f"m{i:02d}" for i in reversed(range(30))] + ["early"]


def test_running_rows_page_newest_first_like_any_other(store):
    for i in range(12):
        store.put_attempt(row(f"r{i:02d}", NOW + i))
    store.put_attempt(row("done", NOW + 5, outcome="succeeded", ended=NOW + 6))
    seen, cursor = [], None
    while True:
        page = store.attempts(JobFilter(status="running"), NOW + 20, limit=5, cursor=cursor)
        seen += [(r.message_id, r.lease) for r in page.rows]
        if (cursor := page.cursor) is None:
            break
    assert seen == [(f"r{i:02d}", 60.0) for i in reversed(range(12))]
    assert store.count(JobFilter(status="running"), NOW + 20) == 12


def test_flags_of_hundreds_of_messages_are_read_at_once(store):
    store.set_flag(Flag("m007", "kill", "ops", NOW))
    store.set_flag(Flag("m249", "cancel", "ops", NOW))
    assert set(store.flags(f"m{i:03d}" for i in range(250))) == {"m007", "m249"}


def test_a_missing_store_opened_without_create_is_an_error_naming_it_and_stays_missing(kind, make_store_url):
    url = make_store_url(kind)
    with pytest.raises(StoreError, match="does not exist") as raised:
        open_store(url, create=False)
    assert url in str(raised.value)
    with pytest.raises(StoreError):
        open_store(url, create=False)


def test_a_store_that_cannot_be_reached_is_a_store_error_naming_it(kind, make_store_url, tmp_path):
    # Given a store URL that points nowhere: a path under a file, or an endpoint where nothing listens
    if kind == "sqlite":
        (tmp_path / "a-file").write_text("")
        url = f"sqlite:///{tmp_path}/a-file/jobs.db"
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"dynamodb://jobs?endpoint=http://127.0.0.1:{port}&region=us-east-1"
    # Then opening it is one StoreError that names it
    with pytest.raises(StoreError) as raised:
        open_store(url)
    assert url in str(raised.value) and "\n" not in str(raised.value)


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
