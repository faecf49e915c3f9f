"""A frozen endpoint delays no deadline: the SQS server stops answering mid-task (SIGSTOP), in both
isolation modes, for sqsmaster's messages and for boto3's. Then it answers again (SIGCONT): nothing lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import boto3
import pytest

from sqsmaster import MessageHandler, TaskManager

from .test_process_isolation import alive

HARD_TIMEOUT = 2.0
KILL_GRACE = 1.0


class Naps(MessageHandler):
    """Sleeps in short naps until stopped; records its pid (process isolation: the child's)."""

    kill_grace = KILL_GRACE

    def run(self) -> None:
        with open(self.kwargs["pid_file"], "w") as out:
            out.write(str(os.getpid()))
        while True:
            time.sleep(0.05)


class ProcessNaps(Naps):
    isolation = "process"


def receive(endpoint: str, url: str, kind: str):
    if kind == "boto3":  # sqstaskmaster style
        queue = boto3.resource("sqs", endpoint_url=endpoint, region_name="us-east-1").Queue(url)
        (message,) = queue.receive_messages(AttributeNames=["All"], VisibilityTimeout=4, WaitTimeSeconds=1)
        return message
    _, _, message = next(TaskManager(url).task_generator(wait_time=1, sqs_timeout=4))
    return message


@pytest.mark.parametrize("kind", ["sqsmaster", "boto3"])
@pytest.mark.parametrize("handler_class", [Naps, ProcessNaps], ids=["signal", "process"])
def test_the_task_is_stopped_on_time_and_the_with_block_ends_in_bounded_time_while_sqs_is_frozen(
        frozen_moto, handler_class, kind, tmp_path):
    # Given a task running under heartbeats every second (visibility 4 s) on a server of its own
    server, endpoint = frozen_moto
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = client.create_queue(QueueName=f"frozen-{uuid.uuid4().hex[:8]}",
                              Attributes={"VisibilityTimeout": "4"})["QueueUrl"]
    TaskManager(url).submit("Naps")
    message = receive(endpoint, url, kind)
    pid_file = tmp_path / "pid"

    # When the server freezes a moment into the task, before its first heartbeat (one second in)
    def freeze() -> None:
        while not pid_file.exists() and time.monotonic() - started < 10:
            time.sleep(0.01)
        time.sleep(0.2)
        server.send_signal(signal.SIGSTOP)

    freezer = threading.Thread(target=freeze)
    started = time.monotonic()
    freezer.start()
    try:
        with handler_class(message, sqs_timeout=4, alarm_timeout=1, hard_timeout=HARD_TIMEOUT,
                           pid_file=str(pid_file)) as handler:
            handler.run()
        elapsed = time.monotonic() - started
    finally:
        freezer.join()
        server.send_signal(signal.SIGCONT)

    # Then the task was stopped at its deadline (in process isolation its process is gone), and the
    # with block ended within hard_timeout + kill_grace + 2 s (the heartbeats and the release gave up, bounded)
    assert handler.outcome == "timed out"
    if handler.isolation == "process":
        assert not alive(int(pid_file.read_text()))
    assert HARD_TIMEOUT <= elapsed <= HARD_TIMEOUT + KILL_GRACE + 2

    # And once the server answers again, nothing is lost: the message comes back to the queue
    again = client.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", [])
    assert [m["MessageId"] for m in again] == [message.message_id]
