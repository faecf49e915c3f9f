"""Prefetched messages (received, not started): kept hidden until they start or are released, and
never extended after that, in batches of ten, by a thread that close() joins."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

from sqsmaster import LocalQueue, MessageHandler, open_queue
from sqsmaster.backends import SendEntry
from sqsmaster.prefetch import PendingLeases

from .workerkit import wait_for


class DistantQueue(LocalQueue):
    """A LocalQueue whose visibility changes take 0.2 s, as to a distant SQS, and are recorded as
    the server sees them: (receipt handle, visibility, when it was applied)."""

    applied: list[tuple[str, int, float]] = []
    calling = threading.Event()

    def change_visibility(self, receipt_handle, visibility_timeout, message_id=None):
        DistantQueue.calling.set()
        time.sleep(0.2)
        super().change_visibility(receipt_handle, visibility_timeout, message_id)
        DistantQueue.applied.append((receipt_handle, visibility_timeout, time.monotonic()))


def received(queue: LocalQueue, count: int):
    for index in range(count):
        queue.send(SendEntry(body=f'{{"task": "T", "kwargs": {{"i": {index}}}}}'))
    messages = queue.receive(count, 0, 30)
    assert len(messages) == count
    return messages


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqsmaster-prefetch-heartbeat"]


def test_a_message_taken_to_run_is_never_extended_afterwards():
    # Given two prefetched messages whose heartbeat is being made right now (each change takes 0.2 s)
    DistantQueue.applied, DistantQueue.calling = [], threading.Event()
    messages = received(DistantQueue("mem://distant-pop"), 2)
    pending = PendingLeases(30, period=0.05)
    pending.add(messages)
    assert DistantQueue.calling.wait(5)

    # When the worker takes the first one to run it
    started = pending.pop()
    popped_at = time.monotonic()
    time.sleep(0.6)  # a few more heartbeats of the other one
    pending.close()

    # Then no visibility change of it reached the server after that moment
    assert started is messages[0]
    assert [at for handle, _, at in DistantQueue.applied if handle == started.receipt_handle and at > popped_at] == []
    assert any(handle == messages[1].receipt_handle for handle, _, _ in DistantQueue.applied)


def test_a_release_is_never_overwritten_by_a_heartbeat_in_flight():
    # Given prefetched messages whose heartbeat is being made right now
    DistantQueue.applied, DistantQueue.calling = [], threading.Event()
    queue = DistantQueue("mem://distant-release")
    messages = received(queue, 2)
    pending = PendingLeases(30, period=0.05)
    pending.add(messages)
    assert DistantQueue.calling.wait(5)

    # When a shutdown releases them
    assert pending.release_all() == 2
    time.sleep(0.5)

    # Then the release was the last word: both are visible now, not hidden again for 30 s
    assert [(h, v) for h, v, _ in DistantQueue.applied][-2:] == [(m.receipt_handle, 0) for m in messages]
    assert len(queue.receive(10, 0, 30)) == 2
    pending.close()


def test_a_prefetched_message_whose_lease_is_lost_is_dropped_not_started():
    # Given two prefetched messages, one of which is deleted behind the worker's back
    queue = LocalQueue("mem://lost-prefetch")
    gone, kept = received(queue, 2)
    queue.delete(gone.receipt_handle)
    pending = PendingLeases(30, period=0.05)
    pending.add([gone, kept])

    # When the heartbeat finds out
    wait_for(lambda: len(pending) == 1, timeout=5, message="the lost message to be dropped")

    # Then the other one is the next to start
    assert pending.pop() is kept
    pending.close()


def test_prefetched_messages_are_extended_ten_to_a_call_and_close_joins_the_thread(sqs_server, fault_proxy):
    # Given ten messages prefetched from SQS (through a proxy that counts the calls the server gets)
    url = sqs_server.create_queue(f"prefetch-{time.monotonic_ns()}")
    proxied = f"{fault_proxy.endpoint}{urlsplit(url).path}"
    queue = open_queue(proxied)
    for index in range(10):
        queue.send(SendEntry(body=f'{{"task": "T", "kwargs": {{"i": {index}}}}}'))
    messages = []
    while len(messages) < 10:
        messages += queue.receive(10 - len(messages), 1, 30)
    for message in messages:
        message.queue = queue
    pending = PendingLeases(30, period=0.2)
    others = set(prefetch_threads())

    # When they wait through a few heartbeats, and the worker closes
    pending.add(messages)
    wait_for(lambda: fault_proxy.calls.get("ChangeMessageVisibilityBatch", 0) >= 2, timeout=5,
             message="two heartbeats")
    pending.close()

    # Then each heartbeat was one ChangeMessageVisibilityBatch call, the release one more, and the
    # thread is gone
    assert fault_proxy.calls.get("ChangeMessageVisibility", 0) == 0
    assert set(prefetch_threads()) - others == set()
    assert len(queue.receive(10, 1, 30)) == 10  # released: visible again at once
    queue.close()


class Quick(MessageHandler):
    def run(self) -> None:
        pass


def test_a_prefetched_message_kept_hidden_starts_without_an_extension_of_its_own(sqs_server, fault_proxy):
    # Given a message received with a 4 s visibility and prefetched (its heartbeat every 0.5 s), through a
    # proxy that counts the calls the server gets
    url = sqs_server.create_queue(f"prefetch-start-{time.monotonic_ns()}")
    queue = open_queue(f"{fault_proxy.endpoint}{urlsplit(url).path}")
    queue.send(SendEntry(body='{"task": "T", "kwargs": {}}'))
    message = wait_for(lambda: queue.receive(1, 1, 4), message="the message")[0]
    pending = PendingLeases(4, period=0.5)
    pending.add([message])

    # When it starts 2.5 s after its receive: the receive's 4 s alone would leave less than a heartbeat
    # period (1 s) and a second of margin, but the prefetch heartbeat hid it again 0.5 s ago at most
    time.sleep(2.5)
    with Quick(pending.pop(), sqs_timeout=4, alarm_timeout=1) as handler:
        handler.run()
    pending.close()

    # Then its handler made no extension of its own (one ChangeMessageVisibility a task saved), and it succeeded
    assert fault_proxy.calls.get("ChangeMessageVisibilityBatch", 0) >= 2
    assert fault_proxy.calls.get("ChangeMessageVisibility", 0) == 0
    assert handler.outcome == "succeeded" and fault_proxy.calls.get("DeleteMessage") == 1
    queue.close()
