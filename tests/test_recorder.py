"""The worker's store recorder against a store that does not answer: the worker's calls into it return at once.

The frozen store is our own fake of the protocol (every call blocks until the test lets it go).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from sqsmaster.worker.events import AttemptStart
from sqsmaster.worker.recorder import CANCEL_CHECK_TIMEOUT, StoreRecorder


class FrozenStore:
    """Every store call blocks until ``thaw`` is set (a partitioned DynamoDB endpoint, a locked file)."""

    url = "frozen://store"

    def __init__(self) -> None:
        self.thaw = threading.Event()

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.thaw.wait()
            return {} if name == "flags" else None
        return call


@pytest.fixture
def frozen():
    store = FrozenStore()
    yield store
    store.thaw.set()


def start(message_id: str = "m1") -> AttemptStart:
    now = time.time()
    return AttemptStart(message_id, "https://q/1", "solve", 1, {"x": 1}, now, now + 60, 30, "signal")


def test_every_call_the_worker_makes_returns_at_once_while_the_store_is_frozen(frozen):
    recorder = StoreRecorder(frozen.url, ["https://q/1"], opener=lambda: frozen)
    began = time.monotonic()
    recorder.attempt_started(start())
    for beat in range(1, 200):
        recorder.heartbeat(start(), time.time(), beat)
        assert recorder.kill_order(start()) is None
    took = time.monotonic() - began
    assert took < 0.5  # 400 in-memory calls; a single store call would block until the test ends
    recorder.writer.close(0.1)
    recorder.reader.close(0.0)


def test_the_cancel_check_of_a_frozen_store_waits_its_bound_once_then_not_at_all(frozen, caplog):
    caplog.set_level(logging.WARNING, logger="sqsmaster.worker.recorder")
    recorder = StoreRecorder(frozen.url, ["https://q/1"], opener=lambda: frozen)
    began = time.monotonic()
    assert recorder.cancelled(["a", "b"]) == set()  # no answer: the batch runs
    first = time.monotonic() - began
    began = time.monotonic()
    assert recorder.cancelled(["c"]) == set()
    second = time.monotonic() - began
    # the bound, plus a margin for a loaded machine; then the reader is known stuck: no wait at all
    assert CANCEL_CHECK_TIMEOUT <= first < CANCEL_CHECK_TIMEOUT + 2
    assert second < 0.5
    assert "message(s) a, b: could not check for cancels" in caplog.text
    recorder.writer.close(0.1)
    recorder.reader.close(0.0)
