"""The operator commands, in-process (``sqsmaster.cli.main``), against the test server."""

from __future__ import annotations

import json

import pytest

from sqsmaster import LocalQueue, TaskManager
from sqsmaster.cli import COMMANDS, main

from .conftest import queue_counts
from .workerkit import bodies, submit


@pytest.mark.parametrize("command", [module.replace("_", "-") for module in COMMANDS])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sqsmaster " + command in capsys.readouterr().out


def test_submit_sends_key_value_and_json_kwargs(make_queue, sqs_client, capsys):
    url = make_queue()
    assert main(["submit", url, "resize", "width=640", "name=cat.png", "--json", '{"tags": ["a"], "width": 1}']) == 0
    message_id = capsys.readouterr().out.strip()
    [message] = sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert message["MessageId"] == message_id
    assert json.loads(message["Body"]) == {"task": "resize", "kwargs": {"tags": ["a"], "width": 640, "name": "cat.png"}}


def test_submit_with_a_bad_pair_is_a_usage_error(make_queue, capsys):
    assert main(["submit", make_queue(), "resize", "width"]) == 2
    assert capsys.readouterr().err.strip() == "sqsmaster: error: expected key=value, got 'width'"


def test_status_shows_depths_the_redrive_policy_and_the_dlq_depth(make_queue, sqs_client, capsys):
    url = make_queue(dead_letter=True, max_receive_count=5)
    dlq = make_queue.dead_letter_urls[url]
    submit(sqs_client, url, "a")
    submit(sqs_client, dlq, "b")

    assert main(["status", url]) == 0

    out = capsys.readouterr().out
    assert "visible    1" in out and "in flight  0" in out and "delayed    0" in out
    assert "after 5 receives" in out
    assert f"dlq        {dlq} (1 visible)" in out


def test_status_of_a_missing_queue_is_one_line_and_exit_3(sqs_server, capsys):
    assert main(["status", f"{sqs_server.endpoint}/123456789012/nope"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_peek_shows_bodies_and_leaves_them_visible(make_queue, sqs_client, capsys):
    url = make_queue()
    submit(sqs_client, url, "a", n=1)
    submit(sqs_client, url, "b", n=2)

    assert main(["peek", url, "-n", "5"]) == 0

    captured = capsys.readouterr()
    assert '{"task": "a", "kwargs": {"n": 1}}' in captured.out and '{"task": "b", "kwargs": {"n": 2}}' in captured.out
    assert "receive count" in captured.err
    assert queue_counts(sqs_client, url) == (2, 0, 0)


def test_peek_refuses_a_queue_with_a_redrive_policy_unless_forced(make_queue, sqs_client, capsys):
    url = make_queue(dead_letter=True, max_receive_count=2)
    submit(sqs_client, url, "a")

    assert main(["peek", url]) == 2
    assert "redrive policy" in capsys.readouterr().err

    assert main(["peek", url, "--force"]) == 0
    assert '"task": "a"' in capsys.readouterr().out


def test_purge_empties_the_queue(make_queue, sqs_client, capsys):
    url = make_queue()
    submit(sqs_client, url, "a")
    assert main(["purge", url]) == 0
    assert queue_counts(sqs_client, url) == (0, 0, 0)


def test_redrive_moves_every_message_back_with_its_body(make_queue, sqs_client, capsys):
    source, target = make_queue(), make_queue()
    for index in range(12):
        submit(sqs_client, source, "t", i=index)

    assert main(["redrive", source, "--to", target]) == 0

    assert "moved 12 message(s)" in capsys.readouterr().out
    assert queue_counts(sqs_client, source) == (0, 0, 0)
    assert bodies(sqs_client, target) == sorted(json.dumps({"task": "t", "kwargs": {"i": i}}) for i in range(12))


@pytest.mark.parametrize("spelling", ["same", "trailing slash", "other host spelling"])
def test_redrive_refuses_its_own_source_as_destination(make_queue, sqs_client, capsys, spelling):
    # Given a queue with a message, and the same queue spelt another way
    url = make_queue()
    submit(sqs_client, url, "t")
    other = {"same": url, "trailing slash": url + "/",
             "other host spelling": url.replace("127.0.0.1", "localhost")}[spelling]

    # When it is redriven into itself
    code = main(["redrive", url, "--to", other])

    # Then that is refused in one line, exit 2, and the message is untouched
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "the same queue" in err
    assert queue_counts(sqs_client, url) == (1, 0, 0)


def test_redrive_of_a_durable_queue_into_itself_by_another_path_is_refused(tmp_path, capsys):
    url = f"sqlite://{tmp_path}/q.db?queue=dlq"
    TaskManager(url).submit("t")
    assert main(["redrive", url, "--to", f"sqlite://{tmp_path}/./q.db?queue=dlq"]) == 2
    assert "the same queue" in capsys.readouterr().err


def test_redrive_moves_every_visible_message_and_says_what_stayed(make_queue, sqs_client, capsys):
    # Given 25 messages in a dead-letter queue, one of them held by another consumer for a minute
    source, target = make_queue(), make_queue()
    for index in range(25):
        submit(sqs_client, source, "t", i=index)
    sqs_client.receive_message(QueueUrl=source, MaxNumberOfMessages=1, VisibilityTimeout=60)

    # When they are redriven
    assert main(["redrive", source, "--to", target]) == 0

    # Then the 24 it could receive moved (three batches and a long poll that came back empty with the counts
    # agreeing), and it says one stayed
    captured = capsys.readouterr()
    assert "moved 24 message(s)" in captured.out and "1 message(s) stayed" in captured.err
    assert queue_counts(sqs_client, target) == (24, 0, 0) and queue_counts(sqs_client, source) == (0, 1, 0)


def test_worker_with_an_unknown_isolation_is_a_usage_error(make_queue, capsys):
    assert main(["worker", make_queue(), "--tasks", "tests.worker_tasks", "--isolation", "thread"]) == 2
    assert "unknown isolation 'thread'" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["sqlite", "fq", "mem"])
def test_status_finds_the_dead_letter_queue_of_a_local_queue(scheme, tmp_path, capsys):
    # Given a local queue with a redrive policy and one message in its dead-letter queue
    if scheme == "sqlite":
        url = f"sqlite:///{tmp_path}/q.db?queue=work&max_receive_count=2&dead_letter=work-dlq"
    elif scheme == "fq":
        url = f"fq:///{tmp_path}/work?max_receive_count=2&dead_letter={tmp_path}/work-dlq"
    else:
        dead = LocalQueue("mem://work-dlq")
        LocalQueue("mem://work", redrive_policy={"deadLetterTargetArn": dead.arn, "maxReceiveCount": 2})
        url = "mem://work"
    tm = TaskManager(url)
    tm.submit("Poison")
    for _ in range(3):  # received with visibility 0 twice; the third receive moves it to the dead-letter queue
        tm.queue.receive(1, 0, 0)

    # When the operator asks for its status
    assert main(["status", url]) == 0

    # Then the dead-letter queue is found and its depth shown
    out = capsys.readouterr().out
    assert "after 2 receives" in out
    assert "(1 visible)" in out
