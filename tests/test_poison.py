"""The poison path: nothing a message carries can crash a consumer, and waiting for a due time costs no receive."""

from __future__ import annotations

import json
import time

import pytest

from sqsmaster import LocalQueue, MalformedMessage, TaskCall, TaskManager, delays, encoding
from sqsmaster.backends import SendEntry
from sqsmaster.delays import DUE_ATTRIBUTE, due_attribute, plan_wait
from sqsmaster.encoding import MAX_NESTING_DEPTH, decode_task
from sqsmaster.payloads import POINTER_CLASS, SIZE_ATTRIBUTE

HOUR, DAY = 3600, 86400
POINTER_ATTRIBUTE = {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": "5"}}


def number(value: str) -> dict[str, dict[str, str]]:
    return {DUE_ATTRIBUTE: {"DataType": "Number", "StringValue": value}}


#: (body, message attributes, what the refusal says): each must be refused with the message id, never raise else.
HOSTILE = [
    ("{not json", {}, "not JSON"),
    ("[" * 100_000 + "]" * 100_000, {}, "deeper than"),
    ('{"a":' * 50_000 + "1" + "}" * 50_000, {}, "deeper than"),
    ('{"task": "note", "kwargs": {"id": ' + "[" * (MAX_NESTING_DEPTH + 1) + "]" * (MAX_NESTING_DEPTH + 1) + "}}",
     {}, "deeper than"),
    ('{"task": "note", "kwargs": {"id": "\\ud800"}}', {}, "lone surrogate"),
    ('{"task": "\\udfff", "kwargs": {}}', {}, "lone surrogate"),
    ('{"task": "note", "kwargs": {"id": NaN}}', {}, "NaN is not JSON"),
    ('{"task": "note", "kwargs": {"id": -Infinity}}', {}, "Infinity is not JSON"),
    ('{"task": "note", "kwargs": {"id": 1e999}}', {}, "out of range"),
    ('{"task": "note", "kwargs": {"id": 1' + "0" * 5000 + "}}", {}, "not JSON"),
    ("x" * 256_000, {}, "not JSON"),
    ("[]", {}, "not a JSON object"),
    ('"task"', {}, "not a JSON object"),
    ('{"kwargs": {}}', {}, "no 'task'"),
    ('{"task": "note"}', {}, "no 'kwargs'"),
    ('{"task": 5, "kwargs": {}}', {}, "'task' is not a string"),
    ('{"task": "note", "kwargs": [1]}', {}, "'kwargs' is not an object"),
    ('{"task": "note", "kwargs": {}} trailing', {}, "not JSON"),
    ('{"task": "note", "kwargs": {"id": "a\x00b"}}', {}, "not JSON"),  # a raw control character in a string
    ('{"task": "note", "kwargs": {"id": "x"}}', number("nan"), "not a finite number"),
    ('{"task": "note", "kwargs": {"id": "x"}}', number("inf"), "not a finite number"),
    ('{"task": "note", "kwargs": {"id": "x"}}', number("-inf"), "not a finite number"),
    ('{"task": "note", "kwargs": {"id": "x"}}', number("tomorrow"), "not a finite number"),
    ('{"task": "note", "kwargs": {"id": "x"}}', {DUE_ATTRIBUTE: {"DataType": "Binary", "BinaryValue": b"\x01"}},
     "not a finite number"),
    (json.dumps([POINTER_CLASS, {}]), POINTER_ATTRIBUTE, "s3BucketName"),
    (json.dumps([POINTER_CLASS, {"s3BucketName": 5, "s3Key": "k"}]), POINTER_ATTRIBUTE, "s3BucketName"),
    (json.dumps([POINTER_CLASS, {"s3BucketName": "b", "s3Key": ""}]), POINTER_ATTRIBUTE, "s3Key"),
    (json.dumps([POINTER_CLASS, "x"]), POINTER_ATTRIBUTE, "s3BucketName"),
    (json.dumps([POINTER_CLASS]), POINTER_ATTRIBUTE, "s3BucketName"),
    ("[" * 5000 + "]" * 5000, POINTER_ATTRIBUTE, "deeper than"),  # a "pointer" no parser may recurse into
]


@pytest.mark.parametrize("body, attributes, reason", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_task_generator_rejects_each_hostile_message_with_its_id_and_goes_on(body, attributes, reason, caplog):
    # Given a hostile message, then a good one, on a queue
    queue = LocalQueue("mem://hostile")
    hostile = queue.send(SendEntry(body, attributes))["MessageId"]
    good = queue.send(SendEntry(json.dumps({"task": "note", "kwargs": {"id": "good"}})))["MessageId"]
    reports: list[BaseException] = []

    # When a consumer reads the queue
    received = []
    manager = TaskManager("mem://hostile", notify=lambda error, context=None: reports.append(error))
    for task, kwargs, message in manager.task_generator(wait_time=0, sqs_timeout=5, max_messages=10,
                                                        until_empty=True):
        received.append((task, kwargs, message.message_id))
        message.delete()
        break

    # Then the good task comes through, and the hostile one is reported as malformed, naming the problem
    assert received == [("note", {"id": "good"}, good)]
    [error] = reports
    assert isinstance(error, MalformedMessage) and reason in str(error)
    # And the log names the hostile message's id, and it is handed back (for the redrive policy), not deleted
    assert error.message_id == hostile
    assert any(hostile in line and "rejected" in line for line in caplog.messages)
    assert queue.get_attributes()["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_the_decoder_takes_what_a_task_may_really_carry():
    # Given bodies near the bounds: 100 levels of nesting, brackets inside strings, unicode, a 600 kB list
    deep = "[" * (MAX_NESTING_DEPTH - 2) + "]" * (MAX_NESTING_DEPTH - 2)
    bodies = {
        json.dumps({"task": "t", "kwargs": {"x": json.loads(deep)}}): "t",
        json.dumps({"task": "t", "kwargs": {"s": "[[[[" * 1000}}): "t",
        json.dumps({"task": "t", "kwargs": {"emoji": "😀", "pair": "\ud83d\ude00"[0:2]}}): "t",
        json.dumps({"task": "t", "kwargs": {"rows": [{"a": [1, 2.5]}] * 50_000}}): "t",
    }
    # Then each decodes
    for body, task in bodies.items():
        assert decode_task(body, "m")[0] == task


def test_the_decoder_refuses_a_body_over_its_size_limit(monkeypatch):
    monkeypatch.setattr(encoding, "MAX_DECODED_BODY", 1000)
    with pytest.raises(MalformedMessage, match="MAX_DECODED_BODY"):
        decode_task(json.dumps({"task": "t", "kwargs": {"s": "x" * 2000}}), "m")


# -- due times: the wait is planned from numbers, no clock, no sleep ----------------------------

@pytest.mark.parametrize("remaining, received, held, max_receive_count, expected", [
    (10, 1, 0.1, 2, ("resend", 10)),                      # the last 15 minutes: a re-send with a native delay
    (900, 1, 0.1, None, ("resend", 900)),
    (0.2, 3, 5, 2, ("resend", 1)),                         # never early, never a hot loop
    (2 * HOUR, 1, 0.1, 2, ("hold", 2 * HOUR - 900)),       # held until 15 minutes before it is due
    (3 * DAY, 1, 0.4, 2, ("hold", 43200 - 1 - 1)),         # at most 12 h from receipt, minus the call's margin
    (3 * DAY, 1, 3 * HOUR, 5, ("hold", 43200 - 3 * HOUR - 1)),  # the cap counts from receipt, not from now
    (3 * DAY, 2, 0.1, 2, ("resend", 900)),                 # its next receive would be moved: re-sent instead
    (3 * DAY, 1, 0.1, 1, ("resend", 900)),                 # maxReceiveCount 1: never held
    (3 * DAY, 2, 0.1, None, ("resend", 900)),              # policy unknown: held only while received once
    (3 * DAY, 7, 0.1, 10, ("hold", 43200 - 1 - 1)),
])
def test_plan_wait(remaining, received, held, max_receive_count, expected):
    wait = plan_wait(remaining, received, held, max_receive_count=max_receive_count)
    assert (wait.action, wait.seconds) == expected


def test_plan_wait_on_fifo_only_holds_and_never_past_the_cap():
    assert plan_wait(3 * DAY, 5, 2.5, fifo=True) == delays.Wait("hold", 43200 - 3 - 1)
    assert plan_wait(30, 1, 0.1, fifo=True) == delays.Wait("hold", 30)


class Clock:
    """Simulated time for a LocalQueue (monotonic) and for due times (Unix), moved by hand."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._wall, self._mono = time.time(), time.monotonic()

    def time(self) -> float:
        return self._wall + self.offset

    def monotonic(self) -> float:
        return self._mono + self.offset


def test_a_task_due_in_three_days_runs_once_when_due_on_its_first_attempt_with_max_receive_count_2():
    # Given a queue that moves a message to its DLQ on the receive after the 2nd, on a simulated clock,
    # and a task due in three days (SQS's real limits: 900 s delays, 12 h visibility from receipt)
    clock = Clock()
    dlq = LocalQueue("mem://due-dlq", clock=clock.monotonic)
    queue = LocalQueue("mem://due", clock=clock.monotonic,
                       redrive_policy={"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 2})
    due = clock.time() + 3 * DAY
    queue.send(SendEntry(json.dumps({"task": "later", "kwargs": {}}), due_attribute(due), delay_seconds=900))

    # When a consumer polls for four simulated days, each receive taking half a second to handle
    ran, receives = [], 0
    while clock.offset < 4 * DAY and not ran:
        messages = queue.receive(10, 0, 30)
        if not messages:
            clock.offset += 60
            continue
        for message in messages:
            receives += 1
            clock.offset += 0.5
            if not delays.hold_if_not_due(message, clock.time, max_receive_count=2, monotonic=clock.monotonic):
                ran.append((clock.time(), message.receive_count))
                message.delete()

    # Then it ran once, not early, on its first receive count (the waiting cost it no receive), and not in the DLQ
    assert len(ran) == 1
    ran_at, attempt = ran[0]
    assert due <= ran_at < due + 120 and attempt == 1
    assert dlq.receive(10, 0) == []
    assert receives <= 3 * DAY / (12 * HOUR) * 2 + 4  # a hold and a re-send per 12 hours, no spinning


def test_a_failed_resend_falls_back_to_a_hold_and_loses_nothing():
    # Given a message due in an hour on a queue that refuses sends
    class NoSends(LocalQueue):
        def send(self, entry):  # noqa: ANN001
            raise OSError("the endpoint refused the send")

    queue = NoSends("mem://no-sends")
    LocalQueue.send(queue, SendEntry("{}", due_attribute(time.time() + 600)))
    [message] = queue.receive(1, 0, 30)

    # When it is planned (a re-send, which fails)
    assert delays.hold_if_not_due(message)

    # Then it was handed back hidden instead, not deleted
    assert queue.get_attributes()["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_task_generator_waits_out_a_due_time_by_resending_without_raising_the_receive_count(make_queue,
                                                                                              monkeypatch):
    # Given (on moto) native delays of at most 2 s and a task due in 2.5 s: one native delay, then a re-send
    monkeypatch.setattr(delays, "MAX_NATIVE_DELAY", 2)
    url = make_queue(dead_letter=True, max_receive_count=2)
    tm = TaskManager(url)
    tm.submit(TaskCall("soon", {}, countdown=2.5))
    started = time.monotonic()

    # When a consumer runs it
    for _task, _kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=10):
        waited = time.monotonic() - started
        message.delete()
        break

    # Then it ran when due, as a fresh copy (receive count 1)
    assert waited >= 2.4
    assert message.receive_count == 1


class _BuggyAttributes(dict):
    """Message attributes whose lookup fails: what a bug of ours on the poison path looks like."""

    def get(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        raise RuntimeError("a bug while reading the attributes")


class BuggyQueue(LocalQueue):
    """A LocalQueue whose messages trip the consumer's own code, for one body."""

    def receive(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        messages = super().receive(*args, **kwargs)
        for message in messages:
            if message.body == "trips":
                message.message_attributes = _BuggyAttributes(x={"DataType": "String", "StringValue": "y"})
        return messages


def test_a_bug_of_the_consumer_before_the_task_hands_the_message_back_and_task_generator_goes_on(caplog):
    # Given a message that trips a bug in the consumer's own code, then a good one
    queue = BuggyQueue("mem://buggy")
    tripping = queue.send(SendEntry("trips"))["MessageId"]
    queue.send(SendEntry(json.dumps({"task": "note", "kwargs": {"id": "good"}})))

    # When a consumer reads the queue
    manager = TaskManager("mem://buggy", queue_constructor=BuggyQueue)
    task, _kwargs, message = next(manager.task_generator(wait_time=0, sqs_timeout=30, max_messages=10))
    message.delete()

    # Then the good task came through, and the other was handed back (with a backoff, not its 30 s
    # visibility), its id in the log
    assert task == "note"
    assert any(tripping in line and "internal error" in line for line in caplog.messages)
    [back] = queue.receive(1, wait_time=3)
    assert back.message_id == tripping
