"""What a sqstaskmaster user brings keeps working: the wire's dates, the errors they catch, the messages
their handler tests build, the module paths they import (issue 11)."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pathlib
import pickle
import uuid
from json import JSONDecodeError

import pytest
from botocore.exceptions import ClientError

from sqsmaster import (
    EncodeError,
    LeaseLost,
    LocalMessage,
    LocalQueue,
    MalformedMessage,
    MessageHandler,
    QueueDoesNotExist,
    QueueError,
    TaskManager,
)
from sqsmaster.encoding import decode_task, encode_task


def sqstaskmaster_body(task: str, kwargs: dict) -> str:
    """The body sqstaskmaster 0.0.11's TaskManager.submit sends (its own code, verbatim)."""
    return json.dumps({"task": task, "kwargs": kwargs}, default=lambda o: o.__str__())


class Colour(enum.Enum):
    RED = 1


# -- the wire --------------------------------------------------------------------------------------

def test_every_value_sqstaskmaster_sends_meaningfully_goes_out_byte_for_byte_as_it_sends_it():
    # Given the values whose str() is their own text: dates and times (naive, with microseconds, with a zone),
    # Decimals, UUIDs, paths, and tuples, nested
    kwargs = {
        "day": datetime.date(2019, 1, 1), "at": datetime.datetime(2019, 1, 1, 12, 30),
        "precise": datetime.datetime(2019, 1, 1, 12, 30, 0, 123456),
        "utc": datetime.datetime(2019, 1, 1, 12, 30, tzinfo=datetime.timezone.utc),
        "time": datetime.time(12, 30), "price": decimal.Decimal("10.10"), "id": uuid.UUID(int=7),
        "path": pathlib.PurePosixPath("images/cat.png"), "pair": (1, 2),
        "nested": {"when": [datetime.date(2020, 2, 29)], "n": 1.5, "ok": True, "none": None},
    }
    # When sqsmaster encodes them
    body = encode_task("Resize", kwargs)
    # Then the body is exactly sqstaskmaster's, so a consumer that parses dates with strptime keeps working
    assert body == sqstaskmaster_body("Resize", kwargs)
    sent = json.loads(body)["kwargs"]
    assert datetime.datetime.strptime(sent["at"], "%Y-%m-%d %H:%M:%S") == kwargs["at"]
    assert sent["utc"] == "2019-01-01 12:30:00+00:00" and sent["precise"] == "2019-01-01 12:30:00.123456"


@pytest.mark.parametrize("kwargs, path, reason", [
    ({"tags": {"b", "a"}}, "tags", "is a set (pass a sorted list)"),
    ({"tags": frozenset()}, "tags", "is a set"),
    ({"stats": {"mean": float("nan")}}, "stats['mean']", "is the float nan"),
    ({"bounds": [0, float("inf")]}, "bounds[1]", "is the float inf"),
    ({"bounds": (float("-inf"), 0)}, "bounds[0]", "is the float -inf"),
    ({"lookup": {1: "a"}}, "lookup", "has the key 1 of type int"),
    ({"deep": [{"ok": {None: 1}}]}, "deep[0]['ok']", "has the key None"),
    ({"flags": {True: 1}}, "flags", "has the key True of type bool"),
    ({"raw": b"\x00"}, "raw", "is of type bytes"),
    ({"colour": Colour.RED}, "colour", "is of type Colour"),
    ({"thing": object()}, "thing", "is of type object"),
])
def test_what_json_cannot_hold_is_refused_naming_the_kwarg_and_the_value_inside_it(kwargs, path, reason):
    with pytest.raises(EncodeError) as caught:
        encode_task("T", kwargs)
    assert caught.value.key == next(iter(kwargs)) and caught.value.path == path
    assert f"kwarg {caught.value.key!r} cannot be encoded to JSON: {path} {reason}" in str(caught.value)


def test_a_value_that_contains_itself_and_one_nested_past_what_a_consumer_reads_are_refused():
    cycle: list = []
    cycle.append(cycle)
    deep: list = []
    inner = deep
    for _ in range(120):
        inner.append([])
        inner = inner[0]
    with pytest.raises(EncodeError, match="contains itself"):
        encode_task("T", {"cycle": cycle})
    # a consumer refuses a body nested deeper than MAX_NESTING_DEPTH: the producer must not send one
    with pytest.raises(EncodeError, match="deeper than a consumer reads"):
        encode_task("T", {"deep": deep})


def test_a_refused_submit_sends_nothing():
    tm = TaskManager("mem://refused")
    with pytest.raises(EncodeError, match="'tags'"):
        tm.submit("T", tags={1, 2})
    assert tm.attributes()["ApproximateNumberOfMessages"] == "0"


# -- errors as sqstaskmaster users catch them ------------------------------------------------------

def test_a_body_that_is_not_json_is_a_value_error_caused_by_the_json_decode_error_sqstaskmaster_gave():
    with pytest.raises(MalformedMessage) as caught:
        decode_task('{"task": "t", "kwargs": {"foo": "b', "m-1")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, JSONDecodeError)


@pytest.mark.parametrize("body, key", [('{"wrong_key": "t", "kwargs": {}}', "task"), ('{"task": "t"}', "kwargs")])
def test_a_missing_key_is_a_value_error_caused_by_the_key_error_sqstaskmaster_gave(body, key):
    with pytest.raises(MalformedMessage) as caught:
        decode_task(body, "m-1")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, KeyError) and caught.value.__cause__.args == (key,)


def test_notify_gets_the_malformed_message_with_the_original_error_as_its_cause(make_queue, sqs_client):
    # Given a queue with a truncated body, as sqstaskmaster's own test sends (the redrive policy takes it after
    # its first receive, so the generator can drain the queue)
    url = make_queue(dead_letter=True, max_receive_count=1)
    sqs_client.send_message(QueueUrl=url, MessageBody='{"task": "task_name", "kwargs": {"foo": "b')
    reports = []
    tm = TaskManager(url, notify=lambda exception, context=None: reports.append((exception, context)))
    # When the generator meets it
    assert list(tm.task_generator(wait_time=0, sqs_timeout=5, until_empty=True)) == []
    # Then notify got a ValueError whose cause is the JSONDecodeError, with sqstaskmaster's context keys
    [(exception, context)] = reports
    assert isinstance(exception, ValueError) and isinstance(exception.__cause__, JSONDecodeError)
    assert context["body"] == '{"task": "task_name", "kwargs": {"foo": "b'
    assert context["ApproximateReceiveCount"] == "1" and context["message_id"] == exception.message_id


def test_except_client_error_still_catches_a_queue_failure_with_sqs_error_code_and_the_original_cause(sqs_server):
    tm = TaskManager(f"{sqs_server.endpoint}/123456789012/no-such-queue")
    with pytest.raises(ClientError) as caught:  # sqstaskmaster users wrote `except ClientError:`
        tm.submit("T")
    error = caught.value
    assert isinstance(error, QueueDoesNotExist) and isinstance(error, QueueError)
    assert error.code == error.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert type(error.__cause__).__name__ == "QueueDoesNotExist" and isinstance(error.__cause__, ClientError)


def test_a_purge_within_60_seconds_is_its_own_error_with_its_code(make_queue):
    tm = TaskManager(make_queue())
    tm.purge()
    with pytest.raises(QueueError) as caught:
        tm.purge()
    assert not isinstance(caught.value, QueueDoesNotExist)
    assert caught.value.code == "AWS.SimpleQueueService.PurgeQueueInProgress"
    assert "purged less than 60 s ago" in str(caught.value)


def test_queue_errors_survive_pickling_with_their_class_and_fields():
    # (process isolation and parallel submits send errors between processes)
    for error in (QueueError("boom", code="X"), QueueDoesNotExist("gone"), LeaseLost("m-1", "ReceiptHandleIsInvalid")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.code) == (type(error), str(error), error.code)
    assert pickle.loads(pickle.dumps(LeaseLost("m-1", "MessageNotInflight"))).message_id == "m-1"


# -- building a message for a handler test ---------------------------------------------------------

class Resize(MessageHandler):
    notified: list = []

    def run(self) -> None:
        if self.kwargs.get("fail"):
            raise OSError("disk full")

    def notify(self, exception, context=None):
        Resize.notified.append((exception, context))


def test_a_local_message_built_for_a_task_records_the_delete_of_a_success():
    message = LocalMessage.for_task("Resize", path="images/cat.png", day=datetime.date(2024, 2, 29))
    assert message.kwargs == {"path": "images/cat.png", "day": "2024-02-29"}
    with Resize(message, sqs_timeout=30, alarm_timeout=10, **message.kwargs) as handler:
        handler.run()
    assert (handler.outcome, message.deleted, message.visibility_timeouts) == ("succeeded", True, [30])


def test_a_local_message_records_the_backoff_of_a_failure_and_notify_gets_sqstaskmasters_context():
    # Given a message built as sqstaskmaster's tests build one, on its third receive
    Resize.notified = []
    message = LocalMessage('{"task": "Resize", "kwargs": {"fail": true}}', {"ApproximateReceiveCount": "3"}, {})
    with Resize(message, sqs_timeout=30, alarm_timeout=10, fail=True) as handler:
        handler.run()
    # Then it was not deleted but handed back with attempt 3's backoff (4 s), and notify saw body and attributes
    assert (handler.outcome, message.deleted, message.visibility_timeouts) == ("failed", False, [30, 4])
    [(exception, context)] = Resize.notified
    assert isinstance(exception, OSError)
    assert context == {"body": message.body, "message_id": message.message_id, **message.attributes}


def test_a_local_message_refuses_a_visibility_change_once_deleted_as_sqs_does():
    message = LocalMessage("{}")
    message.delete()
    message.delete()  # idempotent
    with pytest.raises(LeaseLost):
        message.change_visibility(VisibilityTimeout=10)


def test_sqstaskmasters_module_paths_work_with_only_the_package_name_changed():
    from sqsmaster.local import LocalMessage as CompatMessage
    from sqsmaster.local import LocalQueue as CompatQueue
    from sqsmaster.message_handler import MessageHandler as CompatHandler
    from sqsmaster.task_manager import TaskManager as CompatManager

    assert (CompatMessage, CompatQueue, CompatHandler, CompatManager) == (LocalMessage, LocalQueue, MessageHandler,
                                                                         TaskManager)


def test_local_queues_clear_forgets_every_queue_as_in_sqstaskmaster():
    TaskManager("mem://a", queue_constructor=LocalQueue).submit("T")
    assert "mem://a" in LocalQueue.local_queues and len(LocalQueue.local_queues) == 1
    LocalQueue.local_queues.clear()
    assert len(LocalQueue.local_queues) == 0
    assert TaskManager("mem://a", queue_constructor=LocalQueue).attributes()["ApproximateNumberOfMessages"] == "0"
