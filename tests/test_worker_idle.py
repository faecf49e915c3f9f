"""An idle worker long-polls: a few requests a minute, however many queues, and still stops at once.

Every request is counted at the server's door (bench/proxy.py in front of moto), per queue and action.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from sqsmaster import Registry, Worker, open_queue
from sqsmaster.worker.longpoll import EXTEND_TIMEOUT, IDLE_VISIBILITY, LongPoll
from sqsmaster.worker.receiving import receiving_twin

from .workerkit import WorkerRun, client_for, starts, submit, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from proxy import CountingProxy  # noqa: E402

#: SIGTERM to exit, for an idle worker (the issue's promise). It holds with room to spare on a loaded 2-core
#: machine: the stop is seen within 50 ms and the exit waits for no request (about 0.2 s on a quiet machine).
IDLE_STOP = 1.5
#: A message an abandoned poll got is visible again within IDLE_VISIBILITY of that receive; 4 s more for
#: the test's own receives and scheduling on a loaded machine (the worker's visibility here is 60 s).
STRANDED_AT_MOST = IDLE_VISIBILITY + 4
#: How late the fault proxy answers an extension (s): long enough for a SIGTERM to land while it is on its way.
HELD = 1.0


@pytest.fixture
def counted(sqs_server) -> Iterator[Any]:
    """A counting proxy in front of the test server: ``proxy.counts()`` by (queue name, action)."""
    with CountingProxy(int(sqs_server.endpoint.rsplit(":", 1)[1])) as proxy:
        yield proxy


@pytest.fixture
def workers(tmp_path) -> Iterator[Any]:
    runs: list[WorkerRun] = []

    def start(urls: list[str], *args: str, record: str = "records.jsonl") -> WorkerRun:
        queues = [option for url in urls[1:] for option in ("--queue", url)]
        run = WorkerRun(urls[0], [*queues, "--sqs-timeout", "60", *args], tmp_path / record)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def through(proxy: Any, url: str) -> str:
    return f"{proxy.endpoint}/{url.split('/', 3)[3]}"


def receives(proxy: Any, urls: list[str]) -> int:
    names = {url.rsplit("/", 1)[-1] for url in urls}
    return sum(n for (queue, action), n in proxy.counts().items() if queue in names and action == "ReceiveMessage")


def visible_again_within(client: Any, url: str, seconds: float) -> list[str]:
    """Receive (and delete) what becomes visible on ``url`` within ``seconds``; returns the message ids."""
    # First let a poll still waiting at the server take what was sent, as it would on SQS (moto's long
    # poll looks every 60 ms: a receive of ours sent at once would win every time).
    time.sleep(0.5)
    found: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=60).get("Messages", [])
        for message in batch:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            found.append(message["MessageId"])
        if found:
            return found
    return found


def idle_and_polling(proxy: Any, run: WorkerRun, urls: list[str]) -> None:
    """Wait until the worker is past its first (busy) pass and a long poll of its waits at the server."""
    run.wait_until_ready()
    first_pass = len(urls)
    wait_for(lambda: receives(proxy, urls) > first_pass, timeout=15, message="the first idle long poll")
    time.sleep(1)  # the proxy counts a request as it arrives: let it reach the server behind the proxy


def test_an_idle_worker_makes_a_few_receives_a_minute_with_one_queue_or_three(make_queue, counted, workers):
    # Given a worker on one empty queue and a worker on three, both with the default 20 s wait
    one = [through(counted, make_queue())]
    three = [through(counted, make_queue()) for _ in range(3)]
    first, second = workers(one, record="one.jsonl"), workers(three, record="three.jsonl")
    idle_and_polling(counted, first, one)
    idle_and_polling(counted, second, three)

    # When they idle for 25 s
    before = receives(counted, one), receives(counted, three)
    time.sleep(25)
    during = receives(counted, one) - before[0], receives(counted, three) - before[1]

    # Then each made at most 3 ReceiveMessage calls in that time (one long poll at a time, 20 s each: three
    # queues take turns), where 1 s poll slices would make 25 and 75
    assert during[0] <= 3 and during[1] <= 3, during
    for run in (first, second):
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=10) == 0, run.stderr


def test_sigterm_stops_an_idle_worker_at_once_and_a_message_sent_meanwhile_is_not_stranded(
        make_queue, sqs_client, counted, workers):
    # Given an idle worker in a 20 s long poll, with a 60 s visibility for the messages it runs
    url = make_queue(visibility_timeout=60)
    run = workers([through(counted, url)])
    idle_and_polling(counted, run, [url])

    # When it gets SIGTERM, and a message arrives while the poll it stopped listening to still waits at the server
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=10)
    took = time.monotonic() - stopped
    sent = submit(sqs_client, url, "note", id="meanwhile")

    # Then it exited cleanly within 1.5 s of the signal (see IDLE_STOP)
    assert code == 0, run.stderr
    assert took < IDLE_STOP, (took, run.stderr)
    # And the message is not stranded for the 60 s visibility: the abandoned poll hid it for IDLE_VISIBILITY at most
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]
    assert starts(run.record_path) == []


def watching_the_third(proxy: Any, run: WorkerRun, urls: list[str]) -> None:
    """Wait until the idle worker's long poll is on the third queue (its turn comes after the first two)."""
    idle_and_polling(proxy, run, urls)
    before = receives(proxy, urls[2:])
    wait_for(lambda: receives(proxy, urls[2:]) > before, timeout=15, message="a long poll of the third queue")
    time.sleep(0.5)  # it reaches the server behind the proxy (3 s waits: it is still there)


def test_three_priority_queues_idle_in_turn_and_the_first_still_wins(make_queue, sqs_client, counted, workers):
    # Given an idle worker on three queues (3 s waits, so the third queue's turn comes soon), watching the third
    urls = [make_queue(visibility_timeout=60) for _ in range(3)]
    run = workers([through(counted, url) for url in urls], "--wait-time", "3")
    watching_the_third(counted, run, urls)

    # When a message lands on the first queue, then one on the third (the one being watched)
    submit(sqs_client, urls[0], "note", id="first")
    submit(sqs_client, urls[2], "note", id="third")

    # Then the first queue's message runs first, then the third's
    wait_for(lambda: len(starts(run.record_path)) == 2, timeout=15, message="both tasks")
    assert starts(run.record_path) == ["first", "third"]
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=10) == 0, run.stderr


def test_sigterm_stops_an_idle_worker_on_three_queues_at_once_and_strands_nothing(
        make_queue, sqs_client, counted, workers):
    # Given an idle worker on three queues whose long poll is on the third
    urls = [make_queue(visibility_timeout=60) for _ in range(3)]
    run = workers([through(counted, url) for url in urls], "--wait-time", "3")
    watching_the_third(counted, run, urls)

    # When it gets SIGTERM, and a message lands on each queue meanwhile
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=10)
    took = time.monotonic() - stopped
    sent = [submit(sqs_client, url, "note", id=f"meanwhile{index}") for index, url in enumerate(urls)]

    # Then it exited cleanly within 1.5 s (see IDLE_STOP), and each message is visible again within
    # IDLE_VISIBILITY (the third's may have been taken by the abandoned poll), not after 60 s
    assert code == 0, run.stderr
    assert took < IDLE_STOP, (took, run.stderr)
    for url, message_id in zip(urls, sent):
        assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [message_id]


def test_kill_9_of_an_idle_worker_strands_a_message_for_the_short_idle_visibility_at_most(
        make_queue, sqs_client, counted, workers):
    # Given an idle worker in a long poll, with a 60 s visibility for the messages it runs
    url = make_queue(visibility_timeout=60)
    run = workers([through(counted, url)])
    idle_and_polling(counted, run, [url])

    # When it is SIGKILLed, and a message arrives while its poll still waits at the server
    run.process.send_signal(signal.SIGKILL)
    run.wait()
    sent = submit(sqs_client, url, "note", id="after-kill")

    # Then that message is visible again within IDLE_VISIBILITY, not after 60 s
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]


def test_a_message_that_wakes_an_idle_worker_costs_one_visibility_call_and_a_busy_one_none(
        make_queue, sqs_client, counted, workers):
    # Given an idle worker in a long poll
    url = make_queue(visibility_timeout=60)
    name = url.rsplit("/", 1)[-1]
    run = workers([through(counted, url)], "--max-tasks", "3")
    idle_and_polling(counted, run, [url])

    # When one message wakes it, and two more wait for it once it is busy
    submit(sqs_client, url, "nap", id="wakes", seconds=1)
    wait_for(lambda: starts(run.record_path), timeout=10, message="the first task")
    for index in range(2):
        submit(sqs_client, url, "note", id=f"busy{index}")
    assert run.wait(timeout=20) == 0, run.stderr

    # Then the wake-up cost one ChangeMessageVisibilityBatch (the short idle visibility extended to 60 s), and
    # no task made an extension of its own: the receive already hid it long enough
    counts = counted.counts()
    assert starts(run.record_path) == ["wakes", "busy0", "busy1"]
    assert counts.get((name, "ChangeMessageVisibilityBatch"), 0) == 1, counts
    assert counts.get((name, "ChangeMessageVisibility"), 0) == 0, counts


# -- the long poll itself, in this process ------------------------------------------------------------------

def test_a_long_poll_nobody_listens_to_any_more_releases_what_it_gets(sqs_server, sqs_client, make_queue):
    # Given a long poll of 3 s on an empty queue whose messages the worker would hide for 60 s
    url = make_queue(visibility_timeout=60)
    queue = open_queue(url)
    poll = LongPoll(queue, receiving_twin(queue, 3), 1, 3, 60).start()
    time.sleep(0.5)  # it waits at the server

    # When the worker stops listening, and then a message arrives while the poll still waits
    assert poll.wait(should_stop=lambda: True) == []
    submit(sqs_client, url, "note", id="late")
    time.sleep(0.5)  # the poll takes it (moto looks every 60 ms)

    # Then the poll's thread released it: it is visible again at once (not after IDLE_VISIBILITY), and it
    # was indeed received once before (by the abandoned poll)
    got = sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=2, MessageSystemAttributeNames=["All"])
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in got.get("Messages", [])] == ["2"]
    queue.close()


def test_a_message_whose_extension_fails_after_an_idle_receive_is_not_started_and_comes_back_soon(
        sqs_server, sqs_client, fault_proxy, make_queue):
    # Given a long poll through a proxy that fails every ChangeMessageVisibilityBatch, and a message on the way
    url = make_queue(visibility_timeout=60)
    queue = open_queue(f"{fault_proxy.endpoint}{urlsplit(url).path}")
    fault_proxy.fail("ChangeMessageVisibilityBatch", "ServiceUnavailable", status=503)
    sent = submit(sqs_client, url, "note", id="x")

    # When the poll gets it
    messages = LongPoll(queue, receiving_twin(queue, 3), 1, 3, 60).start().wait(should_stop=lambda: False)

    # Then it is not handed over (no task starts on a 5 s lease), and it is visible again within IDLE_VISIBILITY
    assert messages == [] and fault_proxy.calls.get("ChangeMessageVisibilityBatch") == 1
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]
    queue.close()


# -- the server freezes (SIGSTOP: a network partition as the worker sees it) during an idle long poll ------

@pytest.fixture
def frozen_counted(frozen_moto) -> Iterator[tuple[Any, Any, Any]]:
    """``(moto process, counting proxy in front of it, a client that talks to moto directly)``."""
    process, endpoint = frozen_moto
    with CountingProxy(int(endpoint.rsplit(":", 1)[1])) as proxy:
        yield process, proxy, client_for(endpoint)


def test_sigterm_stops_an_idle_worker_at_once_while_the_server_is_frozen(frozen_counted, workers):
    # Given an idle worker in a long poll, and then the server freezes
    process, proxy, client = frozen_counted
    url = client.create_queue(QueueName="frozen-idle", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    run = workers([through(proxy, url)])
    idle_and_polling(proxy, run, [url])
    process.send_signal(signal.SIGSTOP)

    # When it gets SIGTERM
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=30)
    took = time.monotonic() - stopped
    process.send_signal(signal.SIGCONT)

    # Then it exits cleanly within 1.5 s (see IDLE_STOP): it waits for no answer, and it owed nothing
    assert code == 0, run.stderr
    assert took < IDLE_STOP, (took, run.stderr)


def test_an_idle_worker_whose_server_freezes_during_its_long_poll_carries_on_once_it_thaws(
        frozen_counted, workers):
    # Given an idle worker in a 3 s long poll (so its receive gives up 3 s after its wait: RECEIVE_MARGIN)
    process, proxy, client = frozen_counted
    url = client.create_queue(QueueName="frozen-thaw", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    run = workers([through(proxy, url)], "--wait-time", "3")
    idle_and_polling(proxy, run, [url])

    # When the server freezes for longer than the receive's read timeout, then thaws, and a message comes
    process.send_signal(signal.SIGSTOP)
    wait_for(lambda: "queue unreachable" in run.stderr, timeout=20, message="the receive to give up")
    process.send_signal(signal.SIGCONT)
    sent = submit(client, url, "note", id="after-thaw")

    # Then the worker runs it (its backoff is short after one failure), and still stops cleanly
    wait_for(lambda: starts(run.record_path) == ["after-thaw"], timeout=30, message="the task after the thaw")
    assert sent
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=10) == 0, run.stderr


def test_sigterm_while_an_idle_receive_is_being_extended_releases_the_message_instead_of_stranding_it(
        make_queue, sqs_client, fault_proxy, workers):
    # Given an idle worker in a long poll through a proxy that answers its first ChangeMessageVisibilityBatch
    # 1 s late (done at the server: the message is hidden for the worker's 60 s; the worker does not know yet)
    url = make_queue(visibility_timeout=60)
    fault_proxy.hold("ChangeMessageVisibilityBatch", HELD, calls={1})
    run = workers([f"{fault_proxy.endpoint}{urlsplit(url).path}"])
    run.wait_until_ready()
    wait_for(lambda: fault_proxy.calls.get("ReceiveMessage", 0) > 1, timeout=15, message="the first idle long poll")
    time.sleep(0.5)  # it reaches the server

    # When a message wakes it, and SIGTERM comes while the extension of that message is on its way
    sent = submit(sqs_client, url, "note", id="woken")
    wait_for(lambda: fault_proxy.calls.get("ChangeMessageVisibilityBatch"), timeout=10, message="the extension")
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=20)
    took = time.monotonic() - stopped

    # Then the worker waited for the extension (it must know how it ended), then released the message: it is
    # visible again at once, not after 60 s, and its task never started
    assert code == 0, run.stderr
    assert took < HELD + IDLE_STOP, (took, run.stderr)  # the held answer, then an idle worker's stop
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]
    assert starts(run.record_path) == []


def test_a_draining_worker_ends_soon_after_another_consumer_deletes_the_last_message(make_queue, sqs_client):
    # Given a --until-empty worker (default 20 s wait) on a queue whose one message another consumer holds,
    # and deletes 2 s later
    url = make_queue(visibility_timeout=60)
    submit(sqs_client, url, "note", id="held")
    held = sqs_client.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"][0]
    timer = threading.Timer(2, lambda: sqs_client.delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"]))
    registry = Registry()

    @registry.task
    def note(id: str) -> None:
        raise AssertionError("nothing to run")

    # When the worker drains it
    started = time.monotonic()
    timer.start()
    code = Worker(url, registry, sqs_timeout=60, until_empty=True).run()
    took = time.monotonic() - started

    # Then it ends within seconds of that delete (it looks every second), not after a 20 s long poll: 10 s
    # leaves 8 s for a loaded machine, and a long poll begun before the delete would end after 20 s
    assert code == 0
    assert took < 10, took


def test_an_idle_pool_costs_a_few_receives_a_minute_per_worker_process_and_stops_at_once(
        make_queue, counted, workers):
    # Given a pool of two worker processes, idle on one queue
    url = make_queue()
    run = workers([through(counted, url)], "--concurrency", "2")
    run.wait_until_ready()
    wait_for(lambda: receives(counted, [url]) > 2, timeout=20, message="a long poll")
    time.sleep(2)  # both processes are past their first pass

    # When it idles for 25 s
    before = receives(counted, [url])
    time.sleep(25)
    during = receives(counted, [url]) - before

    # Then it made at most 3 ReceiveMessage calls per process (1 s slices would make 50)
    assert during <= 2 * 3, during
    # And SIGTERM stops the pool within 1.5 s (see IDLE_STOP: the children stop as a lone worker does)
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=10)
    took = time.monotonic() - stopped
    assert code == 0, run.stderr
    assert took < IDLE_STOP, (took, run.stderr)


def submit_fifo(client: Any, url: str, task: str, group: str, **kwargs: Any) -> str:
    return client.send_message(QueueUrl=url, MessageBody=json.dumps({"task": task, "kwargs": kwargs}),
                               MessageGroupId=group, MessageDeduplicationId=kwargs["id"])["MessageId"]


def test_an_idle_worker_on_a_fifo_queue_runs_a_group_in_order_and_sigterm_strands_nothing(
        make_queue, sqs_client, counted, workers):
    # Given an idle worker in a long poll of a FIFO queue (60 s visibility for the messages it runs)
    url = make_queue(visibility_timeout=60, fifo=True)
    run = workers([through(counted, url)])
    idle_and_polling(counted, run, [url])

    # When three messages of one group arrive, the long poll wakes it
    for index in range(3):
        submit_fifo(sqs_client, url, "note", "g", id=f"fifo{index}")
    # Then they run in their group's order
    wait_for(lambda: len(starts(run.record_path)) == 3, timeout=20, message="the three tasks")
    assert starts(run.record_path) == ["fifo0", "fifo1", "fifo2"]

    # And once idle again (a busy pass that finds the queue empty, then a long poll at the server), a SIGTERM
    # stops it at once and a message sent meanwhile is not stranded
    # (the busy pass waits POLL_SLICE = 1 s; 3 s leave room for a loaded machine, inside the 20 s poll)
    time.sleep(3)
    stopped = time.monotonic()
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=10)
    took = time.monotonic() - stopped
    sent = submit_fifo(sqs_client, url, "note", "g", id="meanwhile")
    assert code == 0, run.stderr
    assert took < IDLE_STOP, (took, run.stderr)
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]


def test_an_extension_that_times_out_after_an_idle_receive_does_not_strand_the_message_for_the_whole_visibility(
        sqs_server, sqs_client, fault_proxy, make_queue):
    # Given a long poll through a proxy that answers the extension later than the poll waits for it (done at
    # the server: the message is hidden for the 60 s asked; the poll only sees its call time out)
    url = make_queue(visibility_timeout=60)
    queue = open_queue(f"{fault_proxy.endpoint}{urlsplit(url).path}")
    fault_proxy.hold("ChangeMessageVisibilityBatch", EXTEND_TIMEOUT + 2, calls={1})
    sent = submit(sqs_client, url, "note", id="x")

    # When the poll gets it
    messages = LongPoll(queue, receiving_twin(queue, 3), 1, 3, 60).start().wait(should_stop=lambda: False)

    # Then it is not handed over (how its lease ended is unknown), and it is visible again within
    # IDLE_VISIBILITY of the poll's giving up, as the log says, not after the 60 s the server applied
    assert messages == []
    assert visible_again_within(sqs_client, url, STRANDED_AT_MOST) == [sent]
    queue.close()
