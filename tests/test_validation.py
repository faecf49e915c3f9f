"""Every SQS limit is checked on our side, with an error that names the argument and the limit."""

from __future__ import annotations

import pytest

from sqsmaster import ConfigurationError, EncodeError, LimitExceeded, MessageHandler, MessageTooLarge, TaskManager
from sqsmaster.backends.sqs import endpoint_and_region
from sqsmaster.limits import MAX_MESSAGE_SIZE

from .conftest import queue_counts


class Noop(MessageHandler):
    def run(self) -> None:
        pass


def test_an_oversize_body_names_its_size_and_the_limit_and_sends_nothing(make_queue, sqs_client):
    url = make_queue()
    tm = TaskManager(url)
    with pytest.raises(MessageTooLarge) as info:
        tm.submit("Big", blob="x" * MAX_MESSAGE_SIZE)
    assert info.value.limit == 1_048_576
    assert info.value.size > 1_048_576
    assert "1,048,576" in str(info.value) and f"{info.value.size:,}" in str(info.value)
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_a_body_just_under_the_limit_is_sent(make_queue, sqs_client):
    url = make_queue()
    tm = TaskManager(url, sender_name="s")
    overhead = len('{"task": "Big", "kwargs": {"blob": ""}}') + len("service_name") + len("String") + 1
    tm.submit("Big", blob="x" * (MAX_MESSAGE_SIZE - overhead))
    assert queue_counts(sqs_client, url) == (1, 0, 0)


def test_an_unencodable_kwarg_is_named():
    tm = TaskManager("mem://encode")
    with pytest.raises(EncodeError) as info:
        tm.submit("T", fine=1, handle=open)
    assert info.value.key == "handle"
    assert "'handle'" in str(info.value)
    assert tm.attributes()["ApproximateNumberOfMessages"] == "0"


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(sqs_timeout=10, alarm_timeout=9.5), "alarm_timeout=9.5"),
    (dict(sqs_timeout=0, alarm_timeout=1), "sqs_timeout=0"),
    (dict(sqs_timeout=50_000, alarm_timeout=1), "sqs_timeout=50000"),
    (dict(sqs_timeout=10, alarm_timeout=-1), "alarm_timeout=-1"),
    (dict(sqs_timeout=10, alarm_timeout=2, hard_timeout=0), "hard_timeout=0"),
])
def test_handler_timeouts_that_cannot_work_are_refused(kwargs, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Noop(object(), **kwargs)


def test_handler_timeout_errors_are_value_errors_as_in_sqstaskmaster():
    with pytest.raises(ValueError):
        Noop(object(), sqs_timeout=2, alarm_timeout=1.5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(wait_time=21), "wait_time"),
    (dict(wait_time=-1), "wait_time"),
    (dict(sqs_timeout=43_201), "sqs_timeout"),
    (dict(max_messages=11), "max_messages"),
])
def test_receive_limits_are_checked_before_any_receive(kwargs, name):
    tm = TaskManager("mem://limits")
    with pytest.raises(LimitExceeded) as info:
        next(tm.task_generator(**kwargs))
    assert info.value.name == name


def test_an_unknown_url_scheme_is_refused_with_the_known_ones():
    with pytest.raises(ConfigurationError, match=r"unknown scheme ftp://.*mem://"):
        TaskManager("ftp://host/queue")


def test_a_sender_name_with_a_nul_character_is_refused():
    with pytest.raises(LimitExceeded, match="U\\+0000"):
        TaskManager("mem://nul", sender_name="bad\x00name")


def test_an_isolation_mode_that_does_not_exist_is_refused():
    class Odd(MessageHandler):
        isolation = "thread"

    with pytest.raises(ConfigurationError, match="isolation 'thread'"):
        Odd(object(), sqs_timeout=10, alarm_timeout=5)


@pytest.mark.parametrize("url, expected", [
    ("https://sqs.eu-west-1.amazonaws.com/123/q", (None, "eu-west-1")),
    ("https://sqs.us-gov-west-1.amazonaws.com/123/q", (None, "us-gov-west-1")),
    ("http://127.0.0.1:9324/000000000000/q", ("http://127.0.0.1:9324", None)),
    ("http://localhost:4566/000000000000/q", ("http://localhost:4566", None)),
    ("sqlite:///tmp/q.db?queue=q", (None, None)),  # not SQS: no endpoint to derive (an S3 client's default)
])
def test_endpoint_and_region_from_the_queue_url(url, expected, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    assert endpoint_and_region(url) == expected
