"""The task registry and the retry policies, without a queue."""

from __future__ import annotations

import pytest

from sqsmaster import (
    ConfigurationError,
    HardTimeoutExceeded,
    MessageHandler,
    Registry,
    Retry,
    UnknownTask,
    exponential,
    fixed,
    linear,
    load_tasks,
)
from sqsmaster.worker.retry import plan_failure


def test_policies_give_tasktigers_delays():
    assert [fixed(5, 3).delay(n) for n in (1, 2, 3)] == [5, 5, 5]
    assert [linear(5, 10, 3).delay(n) for n in (1, 2, 3)] == [5, 15, 25]
    assert [exponential(2, 3, 3).delay(n) for n in (1, 2, 3)] == [2, 6, 18]
    assert exponential(600, 2, 5).delay(3) == 900  # capped at SQS's longest delay


def test_max_retries_counts_retries_not_attempts():
    policy = fixed(1, max_retries=2)
    assert plan_failure(RuntimeError(), 2, policy, None).retry
    assert not plan_failure(RuntimeError(), 3, policy, None).retry


def test_retry_on_filters_exceptions_but_never_timeouts():
    policy = fixed(1, max_retries=5)
    assert not plan_failure(ValueError(), 1, policy, (KeyError,)).retry
    assert plan_failure(KeyError(), 1, policy, (KeyError,)).retry
    assert plan_failure(HardTimeoutExceeded(1), 1, policy, (KeyError,)).retry


def test_raise_retry_sets_the_delay():
    assert plan_failure(Retry(delay=7), 1, fixed(1, 2), None).delay == 7
    assert plan_failure(Retry(), 1, linear(3, 0, 2), None).delay == 3


@pytest.mark.parametrize("bad", [lambda: fixed(-1, 2), lambda: fixed(1, -1), lambda: exponential(1, 0.5, 2)])
def test_impossible_policies_are_refused(bad):
    with pytest.raises(ConfigurationError):
        bad()


def test_a_registry_takes_functions_and_handler_classes_under_names():
    registry = Registry()

    @registry.task
    def plain(x: int) -> int:
        return x

    @registry.task(name="custom", hard_timeout=5, retry=fixed(1, 1))
    class Custom(MessageHandler):
        def run(self) -> None:
            pass

    assert registry.names() == ["custom", "plain"]
    assert registry.get("custom").hard_timeout == 5
    assert plain(3) == 3  # the decorator returns the function unchanged
    with pytest.raises(UnknownTask):
        registry.get("nope")
    assert load_tasks(registry) is registry


def test_bad_registrations_are_refused():
    registry = Registry()
    with pytest.raises(ConfigurationError, match="unknown @task option"):
        registry.register(lambda: None, "x", timeout=3)
    with pytest.raises(ConfigurationError, match="unknown isolation"):
        registry.register(lambda: None, "x", isolation="thread")
    with pytest.raises(ConfigurationError):
        registry.register(int, "x")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_tasks("no_such_module_here")


def test_worker_api_runs_a_registry_on_a_local_queue_and_reports_each_attempt():
    # Given a registry with a task that fails once, and a local queue
    from sqsmaster import TaskManager, Worker

    registry = Registry()
    calls = []

    @registry.task(retry=fixed(0, max_retries=1))
    def flaky(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    TaskManager("mem://api").submit("flaky", n=1)
    attempts = []

    # When a worker runs until the queue is empty
    code = Worker("mem://api", registry, sqs_timeout=3, wait_time=1, until_empty=True,
                  on_attempt_end=attempts.append).run()

    # Then the task ran twice, and the hook saw a retry then a delete
    assert code == 0
    assert calls == [1, 1]
    assert [(a.task, a.attempt, a.outcome, a.action) for a in attempts] == [
        ("flaky", 1, "failed", "retry"), ("flaky", 2, "succeeded", "deleted")]
