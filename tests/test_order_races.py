"""Operator orders that cross each other on a running task, on both job stores (sqlite://, and dynamodb:// on
moto over HTTP): a flag is spent only by the order it carried out.

Driven at the worker's recorder (the observer that reads the orders and spends them), so each order lands at
a known step: after the worker read the kill, before the task ended.
"""

from __future__ import annotations

import time

import pytest

from sqsmaster.ops import control
from sqsmaster.outcomes import Action, Outcome
from sqsmaster.store import CANCEL, open_store
from sqsmaster.worker.events import AttemptStart
from sqsmaster.worker.recorder import StoreRecorder
from sqsmaster.worker.worklog import AttemptRecord

from .workerkit import wait_for

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q"


def start(message_id: str) -> AttemptStart:
    now = time.time()
    return AttemptStart(message_id, QUEUE, "solve", 1, {"x": 1}, now, now + 60, 30, "signal")


def killed(attempt: AttemptStart, action: Action) -> AttemptRecord:
    return AttemptRecord(attempt.message_id, QUEUE, "solve", 1, Outcome.KILLED, action, attempt.started, 0.5,
                         "TaskKilled: killed by ops@host")


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_a_cancel_given_after_the_worker_read_a_kill_is_not_spent_by_that_kill(make_store_url, kind):
    # Given a running attempt whose worker has read a kill order (then release)
    url = make_store_url(kind)
    store = open_store(url)
    recorder = StoreRecorder(url, [QUEUE], flag_poll=0.05)
    try:
        attempt = start("m-kill-cancel")
        recorder.attempt_started(attempt)
        control.kill(store, attempt.message_id, then="release", who="ops@host")
        wait_for(lambda: recorder.kill_order(attempt) is not None, 10, "the worker to read the kill")
        # When an operator then cancels the message, and the kill is carried out (the message released)
        control.cancel(store, attempt.message_id, who="ops@host")
        recorder.attempt_ended(killed(attempt, Action.RELEASED))
    finally:
        recorder.close(10)
    # Then the kill's end did not spend the cancel: the worker that receives the message next deletes it unrun
    assert {mid: flag.kind for mid, flag in store.flags([attempt.message_id]).items()} == {
        attempt.message_id: CANCEL}
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_a_kill_carried_out_is_spent_and_a_newer_kill_read_before_the_end_is_the_one_obeyed(make_store_url, kind):
    # Given a running attempt whose worker read a kill (then release), then a second kill (then delete)
    url = make_store_url(kind)
    store = open_store(url)
    recorder = StoreRecorder(url, [QUEUE], flag_poll=0.05)
    try:
        attempt = start("m-two-kills")
        recorder.attempt_started(attempt)
        control.kill(store, attempt.message_id, then="release", who="ops@host")
        wait_for(lambda: recorder.kill_order(attempt) is not None, 10, "the worker to read the kill")
        control.kill(store, attempt.message_id, then="delete", who="ops@host")
        wait_for(lambda: getattr(recorder.kill_order(attempt), "then", None) == "delete", 10, "the second kill read")
        # When the task is killed as the newest order says
        recorder.attempt_ended(killed(attempt, Action.DELETED))
    finally:
        recorder.close(10)
    # Then no order is left pending
    assert store.flags([attempt.message_id]) == {}
    store.close()
