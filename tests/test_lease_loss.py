"""Lease loss in both isolation modes: heartbeats stop, loudly; on_lease_lost decides the task's fate.

moto makes a lease stale when the message is deleted behind the supervisor's back;
botocore's Stubber answers the codes moto cannot produce (MessageNotInflight, 503).
"""

from __future__ import annotations

import logging
import time

import boto3

from sqsmaster import MessageHandler, QueueError, TaskAbandoned, TaskManager

from .conftest import queue_counts
from .test_process_isolation import Recorded, receive_one


class Sleeps(Recorded):
    def run(self):
        time.sleep(self.kwargs["seconds"])
        return "done"


def test_a_lost_lease_stops_heartbeats_and_by_default_the_task_runs_on(make_queue, sqs_client, caplog):
    # Given a running task whose message is deleted behind the supervisor's back
    url = make_queue()
    TaskManager(url).submit("Sleeps", seconds=1.5)
    kwargs, message = receive_one(url, sqs_timeout=5)
    sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message.receipt_handle)

    # When it runs with heartbeats every 0.3 s (on_lease_lost="continue", the default)
    with caplog.at_level(logging.INFO):
        with Sleeps(message, sqs_timeout=5, alarm_timeout=0.3, hard_timeout=30, **kwargs) as handler:
            result = handler.run()

    # Then the loss was logged loudly, heartbeats stopped, the task finished, and the
    # delete with the stale handle was not silent
    assert result == "done"
    assert handler.lease.lost
    assert handler.lease.extensions == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("LEASE LOST" in line for line in errors) == 1
    assert any("lease was lost" in line for line in errors)


def boto3_message(endpoint: str, url: str):
    """A boto3 ``sqs.Message`` (sqstaskmaster style, from ``boto3.resource``) received through ``endpoint``."""
    queue = boto3.resource("sqs", endpoint_url=endpoint, region_name="us-east-1").Queue(url)
    (message,) = queue.receive_messages(AttributeNames=["All"], VisibilityTimeout=30, WaitTimeSeconds=1)
    return message


def test_on_lease_lost_stop_kills_the_task_at_message_not_inflight(make_queue, fault_proxy, sqs_client):
    # Given a boto3 message whose first heartbeat (after the initial extension) is answered
    # MessageNotInflight, which moto cannot say: the proxy in front of it does
    url = make_queue()
    TaskManager(url).submit("Sleeps", seconds=30)
    message = boto3_message(fault_proxy.endpoint, url)
    fault_proxy.fail("ChangeMessageVisibility", "AWS.SimpleQueueService.MessageNotInflight", calls={2})

    class StopOnLoss(Sleeps):
        on_lease_lost = "stop"

    # When the task runs with heartbeats every 0.3 s
    with StopOnLoss(message, sqs_timeout=30, alarm_timeout=0.3, seconds=30) as handler:
        handler.run()
    ended = time.monotonic()

    # Then it is stopped at that heartbeat (its process reaped within a second of the answer; the
    # heartbeat's own timing is the server's and the machine's), reported, and neither deleted nor
    # released (it is not ours)
    assert ended - fault_proxy.times["ChangeMessageVisibility"][1] < 1.0
    assert handler.outcome == "lease lost"
    assert isinstance(handler.notified[0], TaskAbandoned)
    assert fault_proxy.calls["ChangeMessageVisibility"] == 2
    assert queue_counts(sqs_client, url) == (0, 1, 0)


def test_a_heartbeat_network_error_is_retried_before_the_lease_runs_out(make_queue, fault_proxy, sqs_client):
    # Given heartbeats every 1.5 s where the first beat fails with a server error
    url = make_queue()
    TaskManager(url).submit("Sleeps", seconds=3)
    message = boto3_message(fault_proxy.endpoint, url)
    fault_proxy.fail("ChangeMessageVisibility", "ServiceUnavailable", status=503, calls={2})

    # When a 3 s task runs in process isolation (the initial extension hides it for 4 s)
    with Sleeps(message, sqs_timeout=4, alarm_timeout=1.5, seconds=3) as handler:
        handler.run()

    # Then the failed heartbeat was tried again a second later, not a whole period later (and not by a
    # client retrying behind our back: one call per attempt), so the lease never ran out; every other
    # call succeeded, and the task succeeded and was deleted
    extension, failed, retried, *later = fault_proxy.times["ChangeMessageVisibility"]
    assert 1.0 <= retried - failed < 1.5
    assert retried - extension < 4
    assert (handler.lease.failed_extensions, handler.lease.extensions) == (1, 1 + len(later))
    assert handler.outcome == "succeeded"
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_on_lease_lost_stop_works_in_signal_isolation_too(make_queue, sqs_client, caplog):
    class PythonLoop(MessageHandler):
        on_lease_lost = "stop"

        def run(self):
            while True:
                time.sleep(0.01)

    url = make_queue()
    TaskManager(url).submit("PythonLoop")
    kwargs, message = receive_one(url, sqs_timeout=5)
    sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message.receipt_handle)
    with caplog.at_level(logging.ERROR):
        with PythonLoop(message, sqs_timeout=5, alarm_timeout=0.3, hard_timeout=30, **kwargs) as handler:
            handler.run()
    ended = time.time()
    # stopped at the heartbeat that found the loss: within a second of it (margin for a loaded machine)
    (lost,) = [r for r in caplog.records if "LEASE LOST" in r.getMessage()]
    assert ended - lost.created < 1.0
    assert handler.outcome == "lease lost"
    assert isinstance(handler.exception, TaskAbandoned)


def test_a_boto3_message_whose_first_extension_fails_never_leaks_a_botocore_error(make_queue, fault_proxy):
    # Given a boto3 message (sqstaskmaster style) whose visibility changes meet a server error
    url = make_queue()
    TaskManager(url).submit("Sleeps", seconds=0)
    message = boto3_message(fault_proxy.endpoint, url)
    fault_proxy.fail("ChangeMessageVisibility", "InternalError", status=500)
    ran = []

    class Probe(MessageHandler):
        def run(self):
            ran.append(1)

    # When the consumer loop runs it
    with Probe(message, sqs_timeout=30, alarm_timeout=10) as handler:
        handler.run()

    # Then it is a failure of that task, reported as sqsmaster reports queue errors, not a raw
    # botocore exception out of the with block; the task did not run; no call was retried behind our
    # back (the extension, then the attempt to hand it back: it comes back after its visibility)
    assert handler.outcome == "failed"
    assert isinstance(handler.exception, QueueError)
    assert ran == []
    assert fault_proxy.calls["ChangeMessageVisibility"] == 2
