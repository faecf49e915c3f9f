"""One contract, every backend: mem://, sqlite://, fq:// and SQS (moto over HTTP).

A backend is done when it passes this whole suite. Where moto is laxer than real SQS
(it accepts stale receipt handles), the check is skipped for it with the reason.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from sqsmaster import ConfigurationError, LeaseLost, LocalQueue, open_queue
from sqsmaster.backends import QueueBackend, SendEntry, is_process_local
from sqsmaster.errors import LEASE_LOST_CODES

BACKENDS = ["mem", "sqlite", "fq", "sqs"]
MOTO_ACCEPTS_STALE_HANDLES = "moto accepts any handle a message ever had; real SQS and our backends do not"


@dataclass
class Made:
    queue: QueueBackend
    dead_letter: QueueBackend | None
    kind: str

    def other_consumer(self) -> QueueBackend:
        """Another handle on the same queue, as a second worker process would open it."""
        return self.queue if self.queue.process_local else open_queue(self.queue.url)


@pytest.fixture(params=BACKENDS)
def new_queue(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[..., Made]:
    """Factory: ``new_queue(visibility_timeout=2, max_receive_count=0)`` -> a fresh queue of the backend."""
    kind = request.param
    counter = iter(range(1000))

    def make(visibility_timeout: int = 2, max_receive_count: int = 0) -> Made:
        n = next(counter)
        if kind == "sqs":
            make_queue = request.getfixturevalue("make_queue")
            url = make_queue(visibility_timeout=visibility_timeout, dead_letter=bool(max_receive_count),
                             max_receive_count=max_receive_count or 3)
            dlq = make_queue.dead_letter_urls.get(url)
            return Made(open_queue(url), open_queue(dlq) if dlq else None, kind)
        if kind == "mem":
            dead_letter = LocalQueue(f"mem://q{n}-dlq") if max_receive_count else None
            policy = ({"deadLetterTargetArn": dead_letter.arn, "maxReceiveCount": max_receive_count}
                      if dead_letter else None)
            return Made(LocalQueue(f"mem://q{n}", visibility_timeout=visibility_timeout, redrive_policy=policy),
                        dead_letter, kind)
        options = f"visibility_timeout={visibility_timeout}"
        if max_receive_count:
            options += f"&max_receive_count={max_receive_count}"
        url = (f"sqlite://{tmp_path}/queues.db?queue=q{n}&{options}" if kind == "sqlite"
               else f"fq://{tmp_path}/q{n}?{options}")
        queue = open_queue(url).create()  # type: ignore[attr-defined]  (as SQS's CreateQueue; a send would too)
        dlq_url = queue.dead_letter_url()
        return Made(queue, open_queue(dlq_url) if dlq_url else None, kind)

    make.kind = kind  # type: ignore[attr-defined]
    return make


def counts(queue: QueueBackend) -> tuple[int, int, int]:
    """(visible, in flight, delayed) as the queue reports them."""
    attributes = queue.get_attributes()
    return (int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            int(attributes["ApproximateNumberOfMessagesDelayed"]))


def receive_all(queue: QueueBackend, expected: int, visibility_timeout: int | None = None) -> list[Any]:
    messages: list[Any] = []
    deadline = time.monotonic() + 5
    while len(messages) < expected and time.monotonic() < deadline:
        messages += queue.receive(10, wait_time=1, visibility_timeout=visibility_timeout)
    return messages


def test_a_sent_message_is_received_with_its_body_attributes_and_first_receive_count(new_queue):
    # Given a queue with one message carrying a message attribute
    made = new_queue()
    sent = made.queue.send(SendEntry('{"task": "T"}', {"service_name": {"DataType": "String", "StringValue": "x"}}))
    # When it is received
    [message] = made.queue.receive(1, wait_time=1)
    # Then it is the same message, delivered for the first time
    assert message.message_id == sent["MessageId"]
    assert message.body == '{"task": "T"}'
    assert message.message_attributes["service_name"]["StringValue"] == "x"
    assert message.attributes["ApproximateReceiveCount"] == "1"
    assert counts(made.queue) == (0, 1, 0)


def test_a_long_poll_on_an_empty_queue_waits_then_returns_nothing(new_queue):
    made = new_queue()
    started = time.monotonic()
    assert made.queue.receive(1, wait_time=1) == []
    assert 0.8 <= time.monotonic() - started < 3


def test_a_long_poll_returns_as_soon_as_a_message_arrives(new_queue):
    made = new_queue()
    producer = made.other_consumer()
    threading.Timer(0.3, lambda: producer.send(SendEntry("late"))).start()
    started = time.monotonic()
    messages = made.queue.receive(1, wait_time=5)
    assert [m.body for m in messages] == ["late"]
    assert time.monotonic() - started < 2.5


def test_a_leased_message_is_hidden_until_its_lease_runs_out_then_redelivered(new_queue):
    # Given a message received with a 1 s lease
    made = new_queue()
    other = made.other_consumer()  # made first: building an SQS client can outlast a 1 s lease on a busy machine
    made.queue.send(SendEntry("job"))
    [first] = made.queue.receive(1, visibility_timeout=1)
    # When another consumer looks during the lease, and again after it
    during = other.receive(1)
    time.sleep(1.3)
    [again] = other.receive(1, wait_time=1)
    # Then it saw nothing during the lease, and then the same message, received twice, with a new handle
    assert during == []
    assert again.message_id == first.message_id
    assert again.attributes["ApproximateReceiveCount"] == "2"
    assert again.receipt_handle != first.receipt_handle


def test_change_visibility_extends_the_lease_and_zero_makes_the_message_visible_at_once(new_queue):
    made = new_queue()
    other = made.other_consumer()
    made.queue.send(SendEntry("job"))
    [message] = made.queue.receive(1, visibility_timeout=1)
    message.change_visibility(VisibilityTimeout=3)
    time.sleep(1.3)
    assert other.receive(1) == []
    message.change_visibility(VisibilityTimeout=0)
    assert [m.message_id for m in other.receive(1, wait_time=1)] == [message.message_id]


def test_a_visibility_change_past_twelve_hours_from_receipt_loses_the_lease(new_queue):
    made = new_queue()
    made.queue.send(SendEntry("job"))
    [message] = made.queue.receive(1)
    with pytest.raises(LeaseLost):
        message.change_visibility(VisibilityTimeout=43_200 + 60)


def test_a_made_up_receipt_handle_is_a_lost_lease(new_queue):
    made = new_queue()
    made.queue.send(SendEntry("job"))
    with pytest.raises(LeaseLost):
        made.queue.change_visibility("not-a-handle", 10)


def test_a_batch_visibility_change_sets_each_lease_and_reports_a_lost_one_by_its_entry(new_queue):
    # Given two leased messages (2 s leases) and a handle that holds nothing
    made = new_queue()
    other = made.other_consumer()
    made.queue.send_batch([SendEntry(f"m{i}", id=str(i)) for i in range(2)])
    messages = receive_all(made.queue, 2, visibility_timeout=2)
    assert len({m.message_id for m in messages}) == 2
    handles = [m.receipt_handle for m in messages]
    # When one batch call extends both leases to 30 s and names the made-up handle last
    failed = made.queue.change_visibility_batch([(handles[0], 30), (handles[1], 30), ("not-a-handle", 30)])
    # Then only the made-up entry failed, with SQS's code for a lost lease, and both messages stay hidden
    assert [(entry["Id"], entry["Code"] in LEASE_LOST_CODES) for entry in failed] == [("2", True)]
    time.sleep(2.3)
    assert other.receive(10) == []
    # And a batch back to 0 makes both visible at once
    assert made.queue.change_visibility_batch([(handle, 0) for handle in handles]) == []
    assert len(receive_all(other, 2)) == 2


def test_the_handle_of_an_earlier_receive_cannot_extend_the_lease(new_queue):
    if new_queue.kind == "sqs":
        pytest.skip(MOTO_ACCEPTS_STALE_HANDLES)
    # Given a message whose lease ran out and which another consumer received again
    made = new_queue()
    made.queue.send(SendEntry("job"))
    [stale] = made.queue.receive(1, visibility_timeout=1)
    time.sleep(1.2)
    with pytest.raises(LeaseLost):  # run out, not yet received again
        stale.change_visibility(VisibilityTimeout=10)
    [current] = made.other_consumer().receive(1, wait_time=1)
    # When the first consumer heartbeats or deletes with its old handle
    with pytest.raises(LeaseLost):
        stale.change_visibility(VisibilityTimeout=10)
    stale.delete()
    # Then the delete did nothing: the message is still in flight for its current holder
    assert counts(made.queue) == (0, 1, 0)
    current.delete()
    assert counts(made.queue) == (0, 0, 0)


def test_delete_removes_the_message_and_is_idempotent(new_queue):
    made = new_queue()
    made.queue.send(SendEntry("job"))
    [message] = made.queue.receive(1)
    message.delete()
    message.delete()
    assert counts(made.queue) == (0, 0, 0)
    assert made.queue.receive(1, visibility_timeout=0) == []


def test_a_delayed_message_is_counted_as_delayed_and_delivered_after_its_delay(new_queue):
    made = new_queue()
    made.queue.send(SendEntry("later", delay_seconds=1))
    assert counts(made.queue) == (0, 0, 1)
    assert made.queue.receive(1) == []
    messages = made.queue.receive(1, wait_time=3)
    assert [m.body for m in messages] == ["later"]


def test_the_three_counts_and_purge(new_queue):
    made = new_queue()
    for body in "abc":
        made.queue.send(SendEntry(body))
    made.queue.send(SendEntry("d", delay_seconds=30))
    assert len(made.queue.receive(1)) == 1
    assert counts(made.queue) == (2, 1, 1)
    made.queue.purge()
    assert counts(made.queue) == (0, 0, 0)


def test_a_receive_with_visibility_zero_leaves_the_message_visible(new_queue):
    # `sqsmaster peek` looks at messages this way
    made = new_queue()
    made.queue.send(SendEntry("job"))
    [peeked] = made.queue.receive(1, visibility_timeout=0)
    assert counts(made.queue)[0] == 1
    [message] = made.queue.receive(1, wait_time=1)
    assert message.message_id == peeked.message_id
    assert message.attributes["ApproximateReceiveCount"] == "2"


def test_batches_send_and_delete_ten_at_once(new_queue):
    made = new_queue()
    response = made.queue.send_batch([SendEntry(f"m{i}", id=str(i)) for i in range(10)])
    assert sorted(int(entry["Id"]) for entry in response["Successful"]) == list(range(10))
    assert response["Failed"] == []
    messages = receive_all(made.queue, 10)
    assert sorted(m.body for m in messages) == sorted(f"m{i}" for i in range(10))
    assert made.queue.delete_batch([m.receipt_handle for m in messages]) == []
    assert counts(made.queue) == (0, 0, 0)


def test_a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue(new_queue):
    # Given a queue that redrives after 2 receives
    made = new_queue(max_receive_count=2)
    assert json.loads(made.queue.get_attributes()["RedrivePolicy"])["maxReceiveCount"] == 2
    made.queue.send(SendEntry("poison"))
    # When it is received twice and never deleted
    for attempt in (1, 2):
        [message] = made.queue.receive(1, wait_time=1, visibility_timeout=0)
        assert message.receive_count == attempt
    # Then the next receive finds nothing, and the message waits in the dead-letter queue
    assert made.queue.receive(1, wait_time=1) == []
    assert made.dead_letter is not None
    [dead] = made.dead_letter.receive(1, wait_time=1)
    assert dead.body == "poison"
    assert counts(made.queue) == (0, 0, 0)


def test_a_receive_that_moves_a_message_to_the_dead_letter_queue_hands_out_the_others_once(new_queue):
    # Given a queue that redrives after 1 receive, a message received once and visible again, and three
    # good messages behind it
    made = new_queue(max_receive_count=1)
    made.queue.send(SendEntry("poison"))
    [poison] = made.queue.receive(1, wait_time=1, visibility_timeout=0)
    for index in range(3):
        made.queue.send(SendEntry(f"good{index}"))
    # When one receive meets the poison message (moved on) and the good ones
    batch = receive_all(made.queue, 3)
    # Then each good message is handed out once, with one receipt
    assert sorted(message.body for message in batch) == ["good0", "good1", "good2"]
    assert len({message.message_id for message in batch}) == 3
    assert made.dead_letter is not None
    [dead] = made.dead_letter.receive(1, wait_time=1)
    assert dead.message_id == poison.message_id


def test_competing_consumers_never_get_the_same_message(new_queue):
    # Given 40 messages and four consumers (each with its own handle on the queue) receiving at once
    made = new_queue(visibility_timeout=30)
    for start in range(0, 40, 10):
        made.queue.send_batch([SendEntry(f"m{i}", id=str(i)) for i in range(start, start + 10)])
    received: list[str] = []
    lock = threading.Lock()

    def consume(queue: QueueBackend) -> None:
        while batch := queue.receive(3, wait_time=0):
            with lock:
                received.extend(m.body for m in batch)

    consumers = [threading.Thread(target=consume, args=(made.other_consumer(),)) for _ in range(4)]
    for thread in consumers:
        thread.start()
    for thread in consumers:
        thread.join(30)
    # Then each message went to exactly one of them
    assert sorted(received) == sorted(f"m{i}" for i in range(40))


def test_the_backend_declares_what_it_can_do_and_its_twins_work_on_the_same_queue(new_queue):
    # Given a queue of each backend
    made = new_queue(visibility_timeout=30)
    queue = made.queue
    # Then it says whether it lives in this process only (mem://), before and after it is opened, and none is FIFO
    assert queue.process_local is (made.kind == "mem")
    assert is_process_local(queue.url) is queue.process_local
    assert queue.fifo is False
    # When a message is sent through the queue and received through its polling twin
    queue.send(SendEntry('{"n": 1}'))
    received = receive_all(queue.polling_twin(4), 1)
    # Then the twin got it, the heartbeat twin can extend its lease, and the queue itself deletes it
    assert [m.body for m in received] == ['{"n": 1}']
    queue.heartbeat_queue(2).change_visibility(received[0].receipt_handle, 60)
    queue.delete(received[0].receipt_handle)
    assert counts(queue) == (0, 0, 0)


@pytest.mark.parametrize("url", ["mem://given-a-client", "sqlite:///tmp/never.db?queue=q", "fq:///tmp/never-made"])
def test_a_boto3_client_given_to_a_queue_that_cannot_use_it_is_an_error(url):
    # When a local queue is opened with client= (it has no use for a boto3 SQS client)
    with pytest.raises(ConfigurationError) as raised:
        open_queue(url, client=object())
    # Then the error names the argument and the queue, instead of ignoring the client
    assert "client=" in str(raised.value) and url in str(raised.value)
