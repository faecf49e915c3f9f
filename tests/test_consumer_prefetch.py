"""task_generator's receive path is the worker's: messages that wait their turn stay hidden, and come back at once."""

from __future__ import annotations

import time

from sqsmaster import MessageHandler, TaskCall, TaskManager, delays

from .conftest import queue_counts


def test_messages_waiting_their_turn_stay_hidden_while_an_earlier_one_runs_past_the_visibility(make_queue,
                                                                                              sqs_client):
    # Given three tasks taken in one receive with a 3 s visibility, and a handler (heartbeat every second)
    # whose first task runs for twice the visibility and looks at the queue as another consumer would
    url = make_queue()
    tm = TaskManager(url, sender_name="tests")
    for name in ("a", "b", "c"):
        tm.submit("T", name=name)
    seen_by_another_consumer: list[dict] = []

    class Slow(MessageHandler):
        def run(self) -> None:
            if self.kwargs["name"] == ran[0]:
                time.sleep(6)
                seen_by_another_consumer.extend(
                    sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))

    # When the loop runs them with a sqstaskmaster-style handler
    ran: list[str] = []
    received = tm.task_generator(wait_time=1, sqs_timeout=3, max_messages=3)
    for _, kwargs, message in received:
        ran.append(kwargs["name"])
        with Slow(message, sqs_timeout=3, alarm_timeout=1, **kwargs) as handler:
            handler.run()
        if len(ran) == 3:
            break
    received.close()

    # Then no other consumer could take the two that waited their turn, and each ran once
    assert seen_by_another_consumer == []
    assert sorted(ran) == ["a", "b", "c"]
    assert queue_counts(sqs_client, url)[:2] == (0, 0)


def test_a_loop_that_ends_early_hands_the_waiting_messages_back_at_once(make_queue, sqs_client):
    # Given three tasks taken in one receive with a 60 s visibility, the first one running
    url = make_queue()
    tm = TaskManager(url, sender_name="tests")
    for name in ("a", "b", "c"):
        tm.submit("T", name=name)
    received = tm.task_generator(wait_time=1, sqs_timeout=60, max_messages=3)
    _, _, first = next(received)
    first.delete()

    # When the consumer stops looping (break, an exception, close())
    started = time.monotonic()
    received.close()

    # Then the two that never ran are visible again now, not after 60 s
    assert queue_counts(sqs_client, url)[:2] == (2, 0)
    assert time.monotonic() - started < 5


def test_a_task_due_later_on_a_queue_that_redrives_after_one_receive_runs_instead_of_being_dead_lettered(
        make_queue, monkeypatch):
    # Given (on moto) native delays of at most 1 s, a queue whose redrive policy moves a message on its 2nd
    # receive, and a task due in 3 s (one native delay, then a wait the consumer must plan)
    monkeypatch.setattr(delays, "MAX_NATIVE_DELAY", 1)
    url = make_queue(dead_letter=True, max_receive_count=1)
    tm = TaskManager(url)
    tm.submit(TaskCall("later", {}, countdown=3))
    started = time.monotonic()

    # When task_generator consumes the queue (it reads the redrive policy, as the worker does)
    ran = []
    for task, _kwargs, message in tm.task_generator(wait_time=1, sqs_timeout=10, until_empty=True):
        ran.append(task)
        message.delete()
        break

    # Then it ran when due, on a fresh copy: no hold made its next receive the one the policy moves it on
    assert ran == ["later"]
    assert time.monotonic() - started >= 2.9
    assert message.receive_count == 1
    dead_letters = TaskManager(make_queue.dead_letter_urls[url])
    assert dead_letters.attributes()["ApproximateNumberOfMessages"] == "0"
