"""The worker's batched deletes: ten to a call, and never later than max_delay after success."""

from __future__ import annotations

import time

from sqsmaster import LocalQueue
from sqsmaster.backends import SendEntry
from sqsmaster.worker.deletes import DeleteBatcher


class CountingQueue(LocalQueue):
    """Counts DeleteMessageBatch calls, as a server would see them."""

    batches: list[int] = []

    def delete_batch(self, receipt_handles):
        CountingQueue.batches.append(len(receipt_handles))
        return super().delete_batch(receipt_handles)


def in_flight(queue: LocalQueue) -> int:
    return int(queue.get_attributes()["ApproximateNumberOfMessagesNotVisible"])


def test_a_lone_success_is_deleted_within_max_delay():
    CountingQueue.batches = []
    queue = CountingQueue("mem://lone")
    queue.send(SendEntry("a"))
    [message] = queue.receive(1, visibility_timeout=30)
    batcher = DeleteBatcher(max_delay=0.3)
    try:
        batcher.add(message)
        time.sleep(0.6)
        assert in_flight(queue) == 0
        assert message.deleted
        assert CountingQueue.batches == [1]
    finally:
        batcher.close()


def test_successes_are_deleted_ten_to_a_call_and_close_sends_the_rest():
    CountingQueue.batches = []
    queue = CountingQueue("mem://many")
    for i in range(25):
        queue.send(SendEntry(str(i)))
    messages = queue.receive(10, visibility_timeout=30) + queue.receive(10, visibility_timeout=30) + \
        queue.receive(10, visibility_timeout=30)
    batcher = DeleteBatcher(max_delay=60)  # only full batches go before close()
    for message in messages:
        batcher.add(message)
    time.sleep(0.3)
    assert sorted(CountingQueue.batches) == [10, 10]
    batcher.close()
    assert sorted(CountingQueue.batches) == [5, 10, 10]
    assert in_flight(queue) == 0
