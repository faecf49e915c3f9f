"""Deadlines that always hold: no tick escapes the ``with`` block, a swallowed interrupt is still a
timeout, a fired deadline never ends in a delete, and any message shaped like boto3's works.

Signal isolation on ``mem://`` queues; a queue subclass records what a server would see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import MagicMock, Mock, call

import pytest

from sqsmaster import HardTimeoutExceeded, LocalQueue, MessageHandler, TaskManager, TaskStuck
from sqsmaster.supervise.policy import STICKY_PERIOD

ROOT = Path(__file__).resolve().parent.parent


class Recording(LocalQueue):
    """A LocalQueue that records what a server would see: visibility changes and deletes."""

    changes: list[int] = []
    deletes = 0

    def change_visibility(self, receipt_handle, visibility_timeout, message_id=None):
        Recording.changes.append(visibility_timeout)
        super().change_visibility(receipt_handle, visibility_timeout, message_id)

    def delete(self, receipt_handle, message_id=None):
        Recording.deletes += 1
        super().delete(receipt_handle, message_id)


@pytest.fixture
def receive():
    """``receive(name)``: submit one task to a fresh recording queue and receive it (hidden 30 s)."""
    Recording.changes, Recording.deletes = [], 0

    def factory(name: str = "T", **kwargs):
        tm = TaskManager(f"mem://{name}", queue_constructor=Recording)
        tm.submit(name, **kwargs)
        _, task_kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
        return task_kwargs, message

    return factory


def spin(seconds: float) -> None:
    """Pure-Python work: signals land between its bytecodes at once."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_thousands_of_tasks_ending_within_a_millisecond_of_their_deadline_never_escape_the_with_block():
    # Given 2,000 handlers (5 ms hard timeout) whose task ends within ±1 ms of its deadline, in a
    # process of their own (a hang or a stray SIGALRM there cannot take this run down)
    result = subprocess.run([sys.executable, "-m", "tests.deadline_stress", "2000"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    # Then no interrupt escaped any with block, the previous SIGALRM handler was back and no timer
    # armed after each one, no tick landed later, and every outcome was acted on: deleted on success,
    # handed back with its backoff (never deleted) on a timeout
    assert summary["escaped"] == []
    assert summary["handlers"] == 2000
    assert summary["handler_not_restored"] == 0
    assert summary["timer_left_armed"] == 0
    assert summary["stray_ticks"] == 0
    assert summary["succeeded_not_deleted"] == []
    assert summary["timed_out_not_handed_back"] == []
    assert summary["deleted_after_timeout"] == []
    # both sides of the deadline were hit, so the race was exercised (about half and half on a quiet
    # machine; on a loaded one the process is often descheduled across the deadline, and a tick waiting
    # when it resumes wins: 194 successes in a run at load 14)
    assert summary["outcomes"].get("timed out", 0) > 20 and summary["outcomes"].get("succeeded", 0) > 20


class RetriesAfterAnyError(MessageHandler):
    """Its author retries once after any error, ``except:`` included: it swallows the first timeout."""

    def run(self) -> str:
        for _ in range(2):
            try:
                spin(5)
                return "done"
            except:  # noqa: E722
                continue
        return "gave up"


class ReturnsInFinally(MessageHandler):
    """A ``return`` in ``finally`` discards the interrupt on its way out."""

    def run(self) -> str:
        try:
            spin(5)
        finally:
            return "cleaned up"  # noqa: B012


def test_a_bare_except_that_swallows_the_timeout_is_stopped_by_the_next_one_and_not_deleted(receive):
    # Given a task that swallows the first timeout and carries on
    kwargs, message = receive()

    # When its 0.5 s hard timeout passes
    with RetriesAfterAnyError(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.5, **kwargs) as handler:
        handler.run()

    # Then the interrupt came again a second later and stopped it; it timed out, and its message was
    # handed back with its 1 s backoff, not deleted
    assert handler.outcome == "timed out"
    assert isinstance(handler.exception, HardTimeoutExceeded)
    # 0.5 s deadline + one sticky period; the margin is for a loaded 2-core machine
    assert 0.5 + STICKY_PERIOD <= handler.runtime < 0.5 + STICKY_PERIOD + 0.7
    assert (Recording.changes, Recording.deletes) == ([1], 0)


def test_a_return_in_finally_that_discards_the_timeout_is_still_a_timeout(receive):
    kwargs, message = receive()
    with ReturnsInFinally(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.5, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "timed out"
    assert 0.5 <= handler.runtime < 0.5 + 0.7  # margin for a loaded 2-core machine
    assert (Recording.changes, Recording.deletes) == ([1], 0)


def test_a_caller_that_catches_the_timeout_in_the_with_block_does_not_turn_it_into_a_success(receive):
    kwargs, message = receive()
    with ReturnsInFinally(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.3, **kwargs) as handler:
        try:
            handler.run()
        except BaseException:  # the consumer loop's author swallows it too
            pass
    assert handler.outcome == "timed out"
    assert (Recording.changes, Recording.deletes) == ([1], 0)


def test_a_stuck_task_that_swallows_the_interrupt_is_still_stuck(receive):
    class StuckAndDeaf(ReturnsInFinally):
        def running(self) -> bool:
            return False

    kwargs, message = receive()
    with StuckAndDeaf(message, sqs_timeout=30, alarm_timeout=0.2, hard_timeout=60, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "stuck"
    assert isinstance(handler.exception, TaskStuck)
    assert handler.runtime < 0.2 + 0.7  # the first heartbeat asked; margin for a loaded machine
    assert Recording.deletes == 0


def test_a_task_that_returns_just_before_its_deadline_succeeds_and_is_deleted(receive):
    kwargs, message = receive()

    class Quick(MessageHandler):
        def run(self) -> str:
            return "ok"

    with Quick(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.2, **kwargs) as handler:
        result = handler.run()
    spin(0.3)  # past where the deadline would have been: nothing lands here
    assert (result, handler.outcome, Recording.deletes) == ("ok", "succeeded", 1)


def test_keyboard_interrupt_is_notified_releases_the_message_at_once_and_propagates(receive):
    notified = []

    class Interrupted(MessageHandler):
        def run(self) -> None:
            raise KeyboardInterrupt

        def notify(self, exception, context=None):
            notified.append((type(exception).__name__, context["message_id"]))

    kwargs, message = receive()
    with pytest.raises(KeyboardInterrupt):
        with Interrupted(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
            handler.run()
    assert handler.outcome == "interrupted"
    assert notified == [("KeyboardInterrupt", message.message_id)]  # as sqstaskmaster did
    assert (Recording.changes, Recording.deletes) == ([0], 0)


class MockTask(MessageHandler):
    def run(self) -> str:
        if self.kwargs["how"] == "fail":
            raise ValueError("asked to fail")
        if self.kwargs["how"] == "hang":
            time.sleep(30)
        return "ok"


class ProcessMockTask(MockTask):
    isolation = "process"
    kill_grace = 0.5


@pytest.mark.parametrize("handler_class", [MockTask, ProcessMockTask], ids=["signal", "process"])
@pytest.mark.parametrize("make_message", [Mock, MagicMock], ids=["Mock", "MagicMock"])
@pytest.mark.parametrize("how, outcome", [("ok", "succeeded"), ("fail", "failed"), ("hang", "timed out")])
def test_a_handler_unit_test_with_a_mock_message_runs_through(make_message, handler_class, how, outcome):
    # Given a message stubbed as sqstaskmaster users do in their handler tests
    message = make_message()

    # When the handler runs it
    # (a 1.5 s hard timeout: forking and reaping a task process took more than 0.5 s at load 14)
    with handler_class(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=1.5, how=how) as handler:
        handler.run()

    # Then the outcome is right, and the message saw the calls a boto3 message would: hidden for
    # sqs_timeout first, then deleted on success, or handed back with a 1 s backoff
    assert handler.outcome == outcome
    assert message.change_visibility.call_args_list[0] == call(VisibilityTimeout=30)
    if outcome == "succeeded":
        message.delete.assert_called_once_with()
    else:
        message.delete.assert_not_called()
        assert message.change_visibility.call_args_list[-1] == call(VisibilityTimeout=1)


def test_the_sigalrm_handler_in_place_before_is_back_after_every_outcome(receive):
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    try:
        for how in ("ok", "fail", "hang"):
            kwargs, message = receive(how=how)
            with MockTask(message, sqs_timeout=30, alarm_timeout=0.1, hard_timeout=0.3, **kwargs) as handler:
                handler.run()
            assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.2)
        assert calls == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


TICK_STORM = """
import time
from sqsmaster import MessageHandler, TaskManager

class Spin(MessageHandler):
    def run(self):
        end = time.monotonic() + 1
        while time.monotonic() < end:
            pass

for attempt in range(5):
    tm = TaskManager(f"mem://ticks-{attempt}")
    tm.submit("Spin")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))
    started = time.monotonic()
    with Spin(message, sqs_timeout=3, alarm_timeout=0.001, hard_timeout=60, **kwargs) as handler:
        handler.run()
    print(handler.outcome, round(time.monotonic() - started, 3), handler.lease.extensions, flush=True)
"""


def test_a_sigalrm_tick_every_millisecond_never_deadlocks_the_task_on_its_own_wake_up():
    # Given heartbeats every millisecond: SIGALRM ticks land while the previous tick's handler is still
    # waking the heartbeat thread (a threading.Event there deadlocked on its own condition)
    # When five 1 s tasks run, in a process of their own (a deadlock there cannot hang this run)
    result = subprocess.run([sys.executable, "-c", TICK_STORM], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})

    # Then each ran its second and succeeded, with heartbeats all along
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [outcome for outcome, _, _ in lines] == ["succeeded"] * 5
    assert all(float(took) < 1 + 1.0 for _, took, _ in lines)  # margin for a loaded 2-core machine
    assert all(int(extensions) > 0 for _, _, extensions in lines)


def test_a_ctrl_c_overtaken_by_the_deadline_while_the_task_cleans_up_still_propagates(receive):
    # Given a task interrupted by Ctrl-C whose clean-up outlasts its hard timeout: the deadline's
    # interrupt lands inside that clean-up, on top of the KeyboardInterrupt (two signals at once)
    class SlowCleanUp(MessageHandler):
        def run(self) -> None:
            try:
                raise KeyboardInterrupt
            finally:
                spin(1)

    kwargs, message = receive()

    # When the handler runs it, then the Ctrl-C still ends the consumer loop: it is not turned into a
    # timeout the with block would swallow; the message is released for another worker at once
    with pytest.raises(KeyboardInterrupt):
        with SlowCleanUp(message, sqs_timeout=30, alarm_timeout=10, hard_timeout=0.2, **kwargs) as handler:
            handler.run()
    assert handler.outcome == "interrupted"
    assert (Recording.changes, Recording.deletes) == ([0], 0)


class HangingQueue(LocalQueue):
    """A LocalQueue whose first visibility change hangs until the test lets it go (an endpoint that
    stopped answering mid-call); records when each change started."""

    started: list[float] = []
    let_go = threading.Event()

    def change_visibility(self, receipt_handle, visibility_timeout, message_id=None):
        HangingQueue.started.append(time.monotonic())
        if len(HangingQueue.started) == 1:
            HangingQueue.let_go.wait(30)
        super().change_visibility(receipt_handle, visibility_timeout, message_id)


def test_a_heartbeat_call_that_hangs_is_abandoned_and_no_call_starts_after_the_with_block():
    # Given a task whose first heartbeat (0.1 s in) hangs in its call
    HangingQueue.started, HangingQueue.let_go = [], threading.Event()
    tm = TaskManager("mem://hanging", queue_constructor=HangingQueue)
    tm.submit("T")
    _, kwargs, message = next(tm.task_generator(wait_time=0, sqs_timeout=30))

    class Spins(MessageHandler):
        def run(self) -> None:
            spin(5)

    # When its 0.5 s hard timeout passes
    started = time.monotonic()
    try:
        with Spins(message, sqs_timeout=3, alarm_timeout=0.1, hard_timeout=0.5, **kwargs) as handler:
            handler.run()
        ended = time.monotonic()
    finally:
        HangingQueue.let_go.set()
    time.sleep(0.5)  # five heartbeat periods: a heartbeat thread still alive would start calls here

    # Then the task stopped on time, the with block waited half a second for the hung call and went on
    # (the message handed back through a call of its own), and no heartbeat call started afterwards
    assert handler.outcome == "timed out"
    assert ended - started < 0.5 + 0.5 + 1.0  # deadline + the bounded wait; margin for a loaded machine
    assert len(HangingQueue.started) == 2  # the hung heartbeat, then the hand-back
    assert all(at < ended for at in HangingQueue.started)
