"""Eager mode: ``submit`` encodes and checks as for real, then runs the task inline and raises its exception."""

from __future__ import annotations

import datetime
import decimal
import os
import uuid

import pytest

from sqsmaster import (
    ConfigurationError,
    EncodeError,
    MalformedMessage,
    MessageHandler,
    MessageTooLarge,
    Registry,
    TaskCall,
    TaskManager,
    UnknownTask,
)

from .conftest import queue_counts

KWARGS = {"pair": (1, 2), "when": datetime.datetime(2024, 5, 1, 12, 30), "price": decimal.Decimal("1.10"),
          "path": None, "nested": {"ids": (3, 4), "ok": True}, "text": "é\u2603"}


@pytest.fixture
def registry() -> tuple[Registry, list]:
    """A registry with a recording task, a failing task and a handler class; returns (registry, calls)."""
    tasks, calls = Registry(), []

    @tasks.task
    def record(**kwargs):
        calls.append(kwargs)
        return len(calls)

    @tasks.task
    def explode(reason: str) -> None:
        raise ValueError(reason)

    @tasks.task(name="Handled")
    class Handled(MessageHandler):
        def run(self):
            calls.append(("handler", self.kwargs, self.message.message_id))
            return "handled"

    return tasks, calls


def test_the_task_gets_exactly_the_kwargs_a_worker_would_give_it(registry, make_queue):
    # Given a real queue on the moto server, and an eager TaskManager
    tasks, calls = registry
    url = make_queue()
    # When the same call is submitted for real (and received as a worker receives it) and eagerly
    TaskManager(url).submit("record", **KWARGS)
    _, received, message = next(iter(TaskManager(url).task_generator(wait_time=1)))
    message.delete()
    result = TaskManager(url, eager=True, tasks=tasks).submit("record", **KWARGS)
    # Then the eager task saw what the worker's decoding gives: tuples as lists, a datetime as its string
    assert calls == [received]
    assert received["pair"] == [1, 2] and received["when"] == "2024-05-01 12:30:00" and received["price"] == "1.10"
    assert result["Result"] == 1 and result["MessageId"]


def test_an_exception_of_the_task_surfaces_at_submit_and_nothing_is_sent(registry, make_queue, sqs_client):
    tasks, _ = registry
    url = make_queue()
    manager = TaskManager(url, eager=True, tasks=tasks)
    with pytest.raises(ValueError, match="disk full"):
        manager.submit("explode", reason="disk full")
    manager.submit("record", x=1)
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_encoding_errors_and_size_limits_surface_at_submit_and_the_task_does_not_run(registry):
    tasks, calls = registry
    manager = TaskManager("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", eager=True, tasks=tasks)
    with pytest.raises(EncodeError, match="kwarg 'tags'.*set"):
        manager.submit("record", tags={"a", "b"})
    with pytest.raises(MessageTooLarge):
        manager.submit("record", blob="x" * (1024 * 1024))
    with pytest.raises(EncodeError):
        manager.submit_many([("record", {"n": 1}), ("record", {"n": float("nan")}), ("record", {"n": 3})])
    # Only the first task of the batch ran: the second one failed to encode, as it would before any send
    assert calls == [{"n": 1}]


def test_an_unknown_task_or_kwargs_the_function_cannot_take_fail_at_submit(registry):
    tasks, _ = registry
    manager = TaskManager("mem://eager", eager=True, tasks=tasks)
    with pytest.raises(UnknownTask, match="'nope'"):
        manager.submit("nope")
    with pytest.raises(MalformedMessage, match="missing a required argument: 'reason'"):
        manager.submit("explode")


def test_submit_many_runs_every_task_in_order_and_stops_at_the_first_exception(registry):
    tasks, calls = registry
    manager = TaskManager("mem://eager", eager=True, tasks=tasks)
    assert manager.submit_many((("record", {"n": n}) for n in range(5)), parallel=4, progress=True) == 5
    assert calls == [{"n": n} for n in range(5)]
    with pytest.raises(ValueError, match="third"):
        manager.submit_many([("record", {"n": 5}), TaskCall("explode", {"reason": "third"}), ("record", {"n": 6})])
    assert calls[-1] == {"n": 5}


def test_a_handler_class_runs_inline_with_a_message_like_a_workers(registry):
    tasks, calls = registry
    result = TaskManager("mem://eager", eager=True, tasks=tasks).submit("Handled", size=3)
    assert result["Result"] == "handled"
    assert calls == [("handler", {"size": 3}, result["MessageId"])]


def test_delays_are_ignored_the_task_runs_at_once(registry):
    tasks, calls = registry
    TaskManager("mem://eager", eager=True, tasks=tasks).submit(TaskCall("record", {"n": 1}, countdown=3600))
    assert calls == [{"n": 1}]


def test_the_environment_turns_it_on_and_nothing_is_created(registry, monkeypatch, tmp_path):
    tasks, calls = registry
    monkeypatch.setenv("SQSMASTER_EAGER", "1")
    url = f"sqlite:///{tmp_path}/queue.db?queue=jobs"
    manager = TaskManager(url, tasks=tasks)
    manager.submit("record", n=1)
    assert calls == [{"n": 1}] and os.listdir(tmp_path) == []
    # An explicit eager=False wins over the environment
    TaskManager(url, tasks=tasks, eager=False).submit("record", n=2)
    assert calls == [{"n": 1}] and "queue.db" in os.listdir(tmp_path)


def test_a_bad_environment_value_or_a_receive_is_a_clear_error(registry, monkeypatch):
    tasks, _ = registry
    monkeypatch.setenv("SQSMASTER_EAGER", "maybe")
    with pytest.raises(ConfigurationError, match="SQSMASTER_EAGER='maybe'"):
        TaskManager("mem://eager", tasks=tasks)
    manager = TaskManager("mem://eager", tasks=tasks, eager=True)
    with pytest.raises(ConfigurationError, match="eager mode.*nothing to receive"):
        next(iter(manager.task_generator(wait_time=0)))


def test_without_tasks_it_uses_the_default_registry():
    import sqsmaster

    name = f"eager_default_{uuid.uuid4().hex[:8]}"
    sqsmaster.task(lambda value: value * 2, name=name)
    assert TaskManager("mem://eager", eager=True).submit(name, value=21)["Result"] == 42


def test_a_body_over_the_threshold_goes_through_s3_and_back_and_leaves_nothing_there(registry, bucket):
    # Given an eager TaskManager that offloads big bodies to a bucket on the moto server
    tasks, calls = registry
    s3, name = bucket
    manager = TaskManager("https://sqs.us-east-1.amazonaws.com/123456789012/big", eager=True, tasks=tasks,
                          payload_bucket=f"s3://{name}/bodies", payload_client=s3)
    # When a task with a 2 MiB kwarg is submitted
    manager.submit("record", blob="x" * (2 * 2**20))
    # Then the task got it whole, and the stored body was deleted after its run
    assert calls == [{"blob": "x" * (2 * 2**20)}]
    assert s3.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
