"""sqsmaster and the real sqstaskmaster package (from PyPI) share one queue, both ways."""

from __future__ import annotations

import pytest

from sqsmaster import MessageHandler, TaskManager

from .conftest import queue_counts

sqstaskmaster = pytest.importorskip("sqstaskmaster.task_manager")


class Collect(MessageHandler):
    seen: list = []

    def run(self) -> None:
        Collect.seen.append(self.kwargs)


@pytest.fixture
def endpoint_env(sqs_server, monkeypatch):
    # sqstaskmaster builds boto3.resource("sqs") with no endpoint: point the environment at the server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", sqs_server.endpoint)


def test_sqsmaster_runs_what_sqstaskmaster_submits(make_queue, sqs_client, endpoint_env):
    url = make_queue()
    Collect.seen = []
    sqstaskmaster.TaskManager(url, sender_name="old").submit("Legacy", a=1, b=[1, 2])
    for task, kwargs, message in TaskManager(url).task_generator(wait_time=0, sqs_timeout=5, until_empty=True):
        assert task == "Legacy"
        assert message.message_attributes["service_name"]["StringValue"] == "old"
        with Collect(message, sqs_timeout=5, alarm_timeout=2, **kwargs) as handler:
            handler.run()
    assert Collect.seen == [{"a": 1, "b": [1, 2]}]
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_sqstaskmaster_runs_what_sqsmaster_submits_and_our_handler_takes_its_messages(
        make_queue, sqs_client, endpoint_env):
    url = make_queue()
    Collect.seen = []
    TaskManager(url, sender_name="new").submit("Modern", x="y")
    task, kwargs, message = next(sqstaskmaster.TaskManager(url).task_generator(wait_time=1, sqs_timeout=5))
    assert (task, kwargs) == ("Modern", {"x": "y"})
    # a boto3 sqs.Message from sqstaskmaster's generator works with our handler
    with Collect(message, sqs_timeout=5, alarm_timeout=2, **kwargs) as handler:
        handler.run()
    assert handler.outcome == "succeeded"
    assert Collect.seen == [{"x": "y"}]
    assert queue_counts(sqs_client, url) == (0, 0, 0)
