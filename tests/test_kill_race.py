"""An operator's kill that lands in the instant its task ends on its own: the first to happen wins.

The window is a few bytecodes to a few milliseconds wide (signal isolation: between the task's
return and the end of ``run()``; process isolation: between the task's process sending back its
result and the supervisor reaping it), so these tests do not wait for luck: a profile hook on the
main thread orders the kill at the exact step of that window, and the test checks what a user sees:
the handler's outcome and what became of the message on moto's SQS over HTTP.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Iterator

import pytest

from sqsmaster import MessageHandler, TaskManager

from .conftest import queue_counts


def received(url: str) -> tuple[Any, dict[str, Any]]:
    TaskManager(url).submit("Task")
    _, kwargs, message = next(TaskManager(url).task_generator(wait_time=1, sqs_timeout=30))
    return message, kwargs


class HookOn:
    """While in the ``with`` block, call ``action(frame)`` once, on the main thread, at the first profile
    event ``event`` whose function is named ``name`` and whose frame satisfies ``where``."""

    def __init__(self, event: str, name: str, action: Callable[[Any], None],
                 where: Callable[[Any], bool] = lambda frame: True) -> None:
        self.event, self.name, self.action, self.where = event, name, action, where
        self.done = False

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if self.done or event != self.event:
            return
        name = getattr(arg, "__name__", None) if event.startswith("c_") else frame.f_code.co_name
        if name == self.name and self.where(frame):
            self.done = True
            self.action(frame)

    def __enter__(self) -> "HookOn":
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.setprofile(None)


@pytest.fixture
def queue(make_queue: Callable[..., str], sqs_client: Any) -> Iterator[str]:
    yield make_queue(visibility_timeout=30)


class Returns(MessageHandler):
    def run(self) -> str:
        return "done"


class ReturnsInProcess(Returns):
    isolation = "process"


def test_signal_isolation_a_kill_landing_as_run_returns_keeps_the_success_and_the_delete(queue, sqs_client):
    # Given a task (signal isolation) that has returned, its deadline closing, run() not over yet
    message, kwargs = received(queue)
    result = None
    with Returns(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        # When the operator's kill lands right then (as Deadline.__exit__ starts: the task's return is done)
        with HookOn("call", "__exit__", lambda frame: handler.kill("killed by ops"),
                     where=lambda frame: type(frame.f_locals.get("self")).__name__ == "Deadline") as hook:
            result = handler.run()
    # Then the task that ended first keeps its outcome: succeeded, its result returned, the message deleted
    assert hook.done
    assert (handler.outcome, result, handler.exception) == ("succeeded", "done", None)
    assert queue_counts(sqs_client, queue) == (0, 0, 0)


def test_process_isolation_a_kill_landing_between_the_exit_and_the_reap_keeps_the_success(queue, sqs_client):
    # Given a task (process isolation) whose process sent back its result and exited
    message, kwargs = received(queue)
    result = None
    with ReturnsInProcess(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        # When the kill lands just as the supervisor reaps it (before run() is over)
        with HookOn("c_return", "wait4", lambda frame: handler.kill("killed by ops"),
                     where=lambda frame: frame.f_code.co_name == "_reap") as hook:
            result = handler.run()
    # Then it succeeded and its message was deleted: nothing had been killed
    assert hook.done
    assert (handler.outcome, result, handler.exception) == ("succeeded", "done", None)
    assert queue_counts(sqs_client, queue) == (0, 0, 0)


class Lingering:
    """A stdout whose flush blocks until a byte comes down ``fd``: the task process flushes it on its way out,
    after it sent back its result, so it lingers, result sent, not exited, until the test lets it go."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        os.read(self.fd, 1)


class ReturnsThenLingers(MessageHandler):
    isolation = "process"
    gate = -1

    def run(self) -> str:
        sys.stdout = Lingering(self.gate)  # in the task's process only
        return "done"


def test_process_isolation_a_kill_landing_after_the_result_came_back_before_the_exit_keeps_it(queue, sqs_client):
    # Given a task (process isolation) whose process sent back its result but has not exited yet
    message, kwargs = received(queue)
    gate, release = os.pipe()
    result = None
    let_go = threading.Timer(0.5, os.write, args=(release, b"!"))  # it exits 0.5 s after the kill

    def kill_then_let_it_go(frame: Any) -> None:
        handler.kill("killed by ops")
        let_go.start()

    try:
        with ReturnsThenLingers(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
            handler.gate = gate
            # When the kill lands as the supervisor reads that result from its pipe
            with HookOn("c_return", "read", kill_then_let_it_go,
                        where=lambda frame: frame.f_code.co_name == "_drain" and bool(frame.f_locals["self"]._output)
                        ) as hook:
                result = handler.run()
    finally:
        if let_go.is_alive():
            let_go.join()
        os.close(gate)
        os.close(release)
    # Then the task had ended first: it succeeded, its result returned and its message deleted
    assert hook.done
    assert (handler.outcome, result, handler.exception) == ("succeeded", "done", None)
    assert queue_counts(sqs_client, queue) == (0, 0, 0)


class Fails(MessageHandler):
    isolation = "process"

    def run(self) -> None:
        raise ValueError("its own failure")


def test_process_isolation_a_kill_landing_as_a_failed_task_exits_keeps_the_failure(queue, sqs_client):
    # Given a task (process isolation) that failed on its own and exited
    message, kwargs = received(queue)
    with Fails(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        # When the kill lands as it is reaped
        with HookOn("c_return", "wait4", lambda frame: handler.kill("killed by ops"),
                     where=lambda frame: frame.f_code.co_name == "_reap"):
            handler.run()
    # Then its outcome is its own failure (the kill stays for its next attempt), handed back for a retry
    assert handler.outcome == "failed"
    assert "its own failure" in str(handler.exception)
    assert queue_counts(sqs_client, queue) == (0, 1, 0)


def test_a_kill_that_reaches_a_running_task_still_kills_it(queue, sqs_client):
    # Given a task (process isolation) still running when the kill comes (the control of the tests above)
    class Sleeps(MessageHandler):
        isolation = "process"
        kill_grace = 1.0

        def run(self) -> None:
            import time
            time.sleep(30)

    message, kwargs = received(queue)
    with Sleeps(message, sqs_timeout=30, alarm_timeout=10, **kwargs) as handler:
        threading.Timer(0.2, handler.kill, args=("killed by ops",)).start()
        handler.run()
    # Then it is killed, and its message is not deleted
    assert handler.outcome == "killed"
    assert queue_counts(sqs_client, queue) == (0, 1, 0)
