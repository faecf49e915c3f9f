"""sqsmaster and the real sqstaskmaster package (from PyPI) share one queue, both ways."""

from __future__ import annotations

import datetime
import decimal
import uuid

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


def test_dates_and_decimals_read_the_same_whichever_library_sent_them(make_queue, sqs_client, endpoint_env):
    # Given a task with a datetime, a date, a Decimal and a UUID, sent once by each library to one queue
    url = make_queue()
    kwargs = {"at": datetime.datetime(2019, 1, 1, 12, 30), "day": datetime.date(2019, 1, 1),
              "price": decimal.Decimal("10.10"), "id": uuid.UUID(int=3)}
    TaskManager(url, sender_name="new").submit("Report", **kwargs)
    sqstaskmaster.TaskManager(url, sender_name="old").submit("Report", **kwargs)

    # When each library consumes one of them
    old_task, old_kwargs, old_message = next(sqstaskmaster.TaskManager(url).task_generator(wait_time=1,
                                                                                          sqs_timeout=30))
    new_task, new_kwargs, new_message = next(TaskManager(url).task_generator(wait_time=1, sqs_timeout=30))

    # Then both read the same strings, and a consumer written for sqstaskmaster parses the dates as before
    assert old_message.body == new_message.body
    assert old_kwargs == new_kwargs == {"at": "2019-01-01 12:30:00", "day": "2019-01-01", "price": "10.10",
                                        "id": "00000000-0000-0000-0000-000000000003"}
    for received in (old_kwargs, new_kwargs):
        assert datetime.datetime.strptime(received["at"], "%Y-%m-%d %H:%M:%S") == kwargs["at"]
