"""The background writer: a slow or failing job store never holds up the worker that writes to it.

The stores here are our own fakes of the protocol (a store that blocks until told, one that
fails until told), so the tests say exactly when the store answers; nothing sleeps on a guess.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from sqsmaster.store import StoreError
from sqsmaster.store.writer import StoreWriter


class FakeStore:
    """Records what was written; ``gate`` (when cleared) blocks every call; ``failing`` makes calls raise."""

    url = "fake://store"

    def __init__(self) -> None:
        self.written: list[object] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failing = False
        self.closed = False

    def write(self, value: object) -> None:
        self.entered.set()
        self.gate.wait()
        if self.failing:
            raise StoreError("job store fake://store: connection refused")
        self.written.append(value)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def store():
    fake = FakeStore()
    yield fake
    fake.gate.set()


def writer_for(store: FakeStore, **options) -> StoreWriter:
    return StoreWriter(lambda: store, store.url, **options)


def write(value: object):
    return lambda store: store.write(value)


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_writes_reach_the_store_in_order_and_close_flushes_them(store):
    writer = writer_for(store)
    for value in range(5):
        writer.submit(write(value))
    assert writer.close(timeout=5) == 0
    assert store.written == [0, 1, 2, 3, 4]
    assert store.closed


def test_submit_returns_at_once_while_the_store_is_frozen_and_drops_the_oldest_when_full(store):
    # Given a store that does not answer (the first write is stuck in it)
    store.gate.clear()
    writer = writer_for(store, capacity=3)
    writer.submit(write("stuck"))
    assert store.entered.wait(5)
    # When many more writes come than the queue holds
    started = time.monotonic()
    for value in range(10):
        writer.submit(write(value))
    elapsed = time.monotonic() - started
    # Then no submit waited for the store, and the oldest were dropped (counted), the newest kept
    assert elapsed < 0.5  # ten appends to a list: anything near the frozen store's time would be a wait
    assert writer.dropped == 7
    store.gate.set()
    writer.close(timeout=5)
    assert store.written == ["stuck", 7, 8, 9]


def test_writes_with_one_key_coalesce_to_the_latest(store):
    store.gate.clear()
    writer = writer_for(store)
    writer.submit(write("first"))
    assert store.entered.wait(5)
    for beat in range(1, 6):
        writer.submit(write(("beat", beat)), key=("heartbeat", "m1", 1))
    writer.submit(write("after"))
    store.gate.set()
    writer.close(timeout=5)
    assert store.written == ["first", ("beat", 5), "after"]
    assert writer.dropped == 0


def test_close_is_bounded_by_its_timeout_when_the_store_is_frozen(store):
    store.gate.clear()
    writer = writer_for(store)
    writer.submit(write("stuck"))
    writer.submit(write("waiting"))
    assert store.entered.wait(5)
    started = time.monotonic()
    not_written = writer.close(timeout=0.3)
    assert time.monotonic() - started < 2.0  # 0.3 s asked; the margin is for a loaded machine
    assert not_written == 2  # the one in the frozen call and the one behind it


def test_an_outage_is_logged_once_and_its_end_with_the_records_it_lost(store, caplog):
    caplog.set_level(logging.INFO, logger="sqsmaster.store.writer")
    writer = writer_for(store)
    writer.submit(write("before"))
    wait_until(lambda: store.written == ["before"])
    store.failing = True
    for value in range(4):
        writer.submit(write(value))
    wait_until(lambda: writer.failed == 4)
    store.failing = False
    writer.submit(write("after"))
    writer.close(timeout=5)
    assert store.written == ["before", "after"]
    messages = [record.getMessage() for record in caplog.records]
    down = [m for m in messages if "unreachable" in m]
    up = [m for m in messages if "answers again" in m]
    assert len(down) == 1 and "fake://store" in down[0] and "1 record(s) lost so far" in down[0]
    assert len(up) == 1 and "4 record(s) lost during the outage" in up[0]


def test_a_store_that_cannot_be_opened_is_an_outage_not_a_crash(caplog):
    caplog.set_level(logging.INFO, logger="sqsmaster.store.writer")

    def opener():
        raise StoreError("job store fake://store: no such table")

    writer = StoreWriter(opener, "fake://store")
    writer.submit(write("lost"))
    wait_until(lambda: writer.failed == 1)
    assert writer.close(timeout=1) == 0
    assert writer.lost == 1
    assert any("unreachable" in record.getMessage() for record in caplog.records)


def test_ask_answers_before_pending_writes_and_is_bounded_when_the_store_is_frozen(store):
    writer = writer_for(store)
    assert writer.ask(lambda s: "answer", timeout=5) == "answer"
    store.gate.clear()
    writer.submit(write("stuck"))
    assert store.entered.wait(5)
    started = time.monotonic()
    with pytest.raises(StoreError, match="did not answer within 0.2s"):
        writer.ask(lambda s: "late", timeout=0.2)
    assert time.monotonic() - started < 2.0  # 0.2 s asked; margin for a loaded machine
    store.gate.set()
    writer.close(timeout=5)


def test_periodic_jobs_run_in_the_writer_thread_and_their_failures_are_ignored():
    now = [0.0]
    calls: list[str] = []
    ran = threading.Event()

    def job(store):
        calls.append(threading.current_thread().name)
        ran.set()
        raise StoreError("down")

    writer = StoreWriter(lambda: FakeStore(), "fake://store", clock=lambda: now[0])
    writer.every(10.0, job)
    writer.submit(write("x"))  # wakes the thread: the job is not due yet
    time.sleep(0.05)
    assert calls == []
    now[0] = 10.0
    writer.submit(write("y"))
    assert ran.wait(5)
    writer.close(timeout=5)
    assert calls == ["sqsmaster-store-writer"]
    assert writer.failed == 0  # a periodic read that fails loses no record


def test_an_outage_still_on_at_the_end_is_logged_with_every_record_it_lost(store, caplog):
    # Given a store that fails from the second write on (a full disk) and never answers again
    caplog.set_level(logging.INFO, logger="sqsmaster.store.writer")
    writer = writer_for(store)
    writer.submit(write("before"))
    wait_until(lambda: store.written == ["before"])
    store.failing = True
    for value in range(5):
        writer.submit(write(value))
    wait_until(lambda: writer.failed == 5)
    # When the worker ends
    assert writer.close(timeout=5) == 0
    # Then the log says how many records the outage lost in all, not only the first one
    messages = [record.getMessage() for record in caplog.records]
    assert any("5 record(s) lost during the outage" in m and "still unreachable" in m for m in messages), messages
