"""Bad input on the command line, as a new user types it: one line on stderr naming the problem, and the
documented exit code (0 ok, 1 the work failed, 2 usage or configuration, 3 queue missing or unreachable).

Run in-process (``main([...])``) where the command returns before a worker starts; a worker that runs
is a process of its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from sqsmaster import __version__
from sqsmaster.cli import main
from sqsmaster.cli.worker import settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """``sqsmaster worker`` configures the root logger; put pytest's back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def error_line(capsys: Any) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, f"not one line:\n{err}"
    return err.strip()


def sqlite(tmp_path: Path, name: str = "work", file: str = "q.db") -> str:
    return f"sqlite://{tmp_path / file}?queue={name}"


# -- the worker's flags and settings ----------------------------------------------------------------

@pytest.mark.parametrize("flags, says", [
    (["--hard-timeout", "0"], "argument --hard-timeout: must be > 0, not '0'"),
    (["--hard-timeout", "nan"], "argument --hard-timeout: must be a finite number"),
    (["--concurrency", "two"], "argument --concurrency: must be a whole number, not 'two'"),
    (["--concurrency", "0"], "argument --concurrency: must be >= 1"),
    (["--wait-time", "21"], "argument --wait-time: must be >= 0 and <= 20"),
    (["--prefetch", "10"], "argument --prefetch: must be >= 0 and <= 9"),
    (["--sqs-timeout", "1.2"], "--sqs-timeout 1.2 is too short"),
    (["--sqs-timeout", "5", "--alarm-timeout", "4.5"], "--alarm-timeout 4.5 must be more than 1 s shorter"),
    (["--isolation", "thread"], "unknown isolation 'thread'"),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
    (["--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD'"),
    (["--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_a_bad_worker_flag_is_one_line_in_the_words_of_the_command_line_and_exit_2(flags, says, tmp_path, capsys):
    assert main(["worker", sqlite(tmp_path), "--tasks", "tests.worker_tasks", *flags]) == 2
    line = error_line(capsys)
    assert says in line and line.startswith(("sqsmaster worker: error:", "sqsmaster: error:"))
    assert "_timeout=" not in line and "SQS limit" not in line  # no Python names


@pytest.mark.parametrize("argv, says", [
    (["worker", "--tasks", "tests.worker_tasks"], "the queue to work on is missing"),
    (["worker", "URL"], "--tasks MODULE is missing"),
    (["worker", "mem://x", "--tasks", "tests.worker_tasks"], "a mem:// queue lives inside one process"),
    (["worker", "sqlite:///tmp/no-queue-named.db", "--tasks", "tests.worker_tasks"], "names no queue: add ?queue="),
    (["worker", "foo://bar", "--tasks", "tests.worker_tasks"], "unknown scheme foo://"),
    (["worker", "URL", "--tasks", "no_such_module_anywhere"], "cannot import the tasks module"),
    (["worker", "URL", "--tasks", "tests.worker_tasks", "--dlq", "sqlite:///tmp/dlq.db"], "names no queue"),
])
def test_a_worker_that_cannot_start_says_why_in_one_line_and_exits_2(argv, says, tmp_path, capsys):
    argv = [sqlite(tmp_path) if part == "URL" else part for part in argv]
    assert main(argv) == 2
    assert says in error_line(capsys)


def test_a_tasks_module_with_a_syntax_error_is_one_line_with_file_and_line_and_exit_2(tmp_path, capsys,
                                                                                       monkeypatch):
    (tmp_path / "broken_tasks.py").write_text("import os\n\ndef resize(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["worker", sqlite(tmp_path), "--tasks", "broken_tasks"]) == 2
    line = error_line(capsys)
    assert "cannot import the tasks module 'broken_tasks': SyntaxError" in line
    assert "broken_tasks.py, line 3" in line


def test_worker_settings_come_from_sqsmaster_variables_and_a_flag_wins(tmp_path):
    from sqsmaster.cli import build_parser

    environ = {"SQSMASTER_QUEUE_URL": sqlite(tmp_path), "SQSMASTER_TASKS": "a, b", "SQSMASTER_HARD_TIMEOUT": "5",
               "SQSMASTER_CONCURRENCY": "3", "SQSMASTER_UNTIL_EMPTY": "yes", "SQSMASTER_LOG_FORMAT": "json"}
    args = settings(build_parser().parse_args(["worker", "--concurrency", "2"]), environ)
    assert (args.url, args.tasks, args.hard_timeout, args.concurrency, args.until_empty, args.log_format) == (
        sqlite(tmp_path), ["a", "b"], 5.0, 2, True, "json")
    assert (args.grace, args.wait_time, args.isolation) == (30.0, 20.0, "signal")  # the documented defaults


def test_a_bad_sqsmaster_variable_is_named_with_its_flag_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SQSMASTER_CONCURRENCY", "lots")
    assert main(["worker", sqlite(tmp_path), "--tasks", "tests.worker_tasks"]) == 2
    assert "SQSMASTER_CONCURRENCY='lots' (for --concurrency): must be a whole number" in error_line(capsys)


# -- queues that do not exist are not created ---------------------------------------------------------

@pytest.mark.parametrize("command", [["submit", "URL", "T"], ["status", "URL"], ["peek", "URL"], ["purge", "URL"],
                                     ["redrive", "URL", "--to", "URL2"], ["submit-file", "URL", "FILE"]])
@pytest.mark.parametrize("scheme", ["sqlite", "fq"])
def test_a_mistyped_local_queue_path_is_exit_3_and_creates_nothing(command, scheme, tmp_path, capsys):
    # Given an existing queue, and a URL with a typo in its path
    good = sqlite(tmp_path) if scheme == "sqlite" else f"fq://{tmp_path / 'work'}"
    assert main(["create", good]) == 0
    capsys.readouterr()
    typo = good.replace("q.db", "q2.db").replace("/work", "/wrok")
    (tmp_path / "tasks.jsonl").write_text('{"task": "T", "kwargs": {}}\n')
    argv = [{"URL": typo, "URL2": good, "FILE": str(tmp_path / "tasks.jsonl")}.get(part, part) for part in command]
    # When a command is given the mistyped one
    assert main(argv) == 3
    # Then it says the queue does not exist and what is missing, and no file or directory appeared
    line = error_line(capsys)
    assert "does not exist" in line and ("no queue file" in line or "no directory" in line)
    assert not (tmp_path / "q2.db").exists() and not (tmp_path / "wrok").exists()


def test_a_queue_the_file_does_not_hold_names_the_ones_it_has(tmp_path, capsys):
    assert main(["create", sqlite(tmp_path, "work")]) == 0
    capsys.readouterr()
    assert main(["status", sqlite(tmp_path, "wrok")]) == 3
    assert "has no queue 'wrok'; it has 'work'" in error_line(capsys)


def test_create_then_submit_then_status_with_log_options_after_the_command(tmp_path, capsys):
    url = f"{sqlite(tmp_path)}&max_receive_count=2"
    assert main(["create", url]) == 0
    assert "dead-letter queue" in capsys.readouterr().out
    assert main(["create", url]) == 0  # idempotent, as SQS's CreateQueue
    assert "(it existed already)" in capsys.readouterr().out
    assert main(["submit", url, "T", "x=1", "-v"]) == 0
    assert main(["status", url, "--log-level", "debug"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, code, says", [
    (["create", "mem://x"], 2, "needs no creating"),
    (["create", "sqlite:///tmp/x.db?queue=a", "--visibility-timeout", "5"], 2, "takes its options in its URL"),
    (["create", "http://127.0.0.1:5000/1/q", "--visibility-timeout", "-1"], 2, "must be >= 0"),
    (["submit", "URL", "T", "x"], 2, "expected key=value, got 'x'"),
    (["submit-file", "URL", "/no/such/file.jsonl"], 2, "cannot read /no/such/file.jsonl"),
    (["report", "/no/such/jobs.log"], 2, "cannot read the job log /no/such/jobs.log"),
    (["redrive", "URL", "--to", "URL"], 2, ""),
    (["nosuch"], 2, "invalid choice: 'nosuch'"),
    (["status"], 2, "the following arguments are required"),
])
def test_other_bad_input_is_one_line_with_its_exit_code(argv, code, says, tmp_path, capsys):
    assert main(["create", sqlite(tmp_path)]) == 0
    capsys.readouterr()
    assert main([sqlite(tmp_path) if part == "URL" else part for part in argv]) == code
    assert says in error_line(capsys)


def test_a_file_that_is_not_a_job_log_is_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello\n")
    assert main(["report", str(tmp_path / "notes.txt")]) == 2
    assert "is not a job log: none of its lines is a job record (line 1" in error_line(capsys)


# -- SQS: what is not "queue missing" ----------------------------------------------------------------

def no_aws_credentials(monkeypatch: Any, tmp_path: Path) -> None:
    """No credentials anywhere boto3 looks (and no instance-metadata lookup: nothing leaves this host)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_missing_aws_credentials_are_a_configuration_error_not_a_missing_queue(capsys, monkeypatch, tmp_path):
    no_aws_credentials(monkeypatch, tmp_path)
    # When a command is pointed at an SQS queue
    assert main(["status", "https://sqs.eu-west-1.amazonaws.com/123456789012/work"]) == 2
    # Then it says the credentials are missing and how to give them
    line = error_line(capsys)
    assert "no AWS credentials" in line and "AWS_ACCESS_KEY_ID" in line and "does not exist" not in line


@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_a_worker_without_aws_credentials_stops_at_once_with_exit_2(concurrency, monkeypatch, tmp_path):
    # Given no credentials (the subprocess inherits this environment)
    no_aws_credentials(monkeypatch, tmp_path)
    # When a worker (or a pool) starts on an SQS queue
    result = subprocess.run(
        [sys.executable, "-m", "sqsmaster", "worker", "https://sqs.eu-west-1.amazonaws.com/123456789012/work",
         "--tasks", "tests.worker_tasks", "--concurrency", concurrency],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it stops with the configuration error's code, saying what is missing, instead of waiting for a queue
    assert result.returncode == 2, result.stderr
    assert "no AWS credentials" in result.stderr and "does not exist" not in result.stderr


def test_a_second_purge_within_a_minute_is_its_own_error_and_exit_1(make_queue, capsys):
    url = make_queue()
    assert main(["purge", url]) == 0
    assert main(["purge", url]) == 1
    assert "was purged less than 60 s ago (AWS.SimpleQueueService.PurgeQueueInProgress)" in error_line(capsys)


def test_a_missing_sqs_queue_is_exit_3(sqs_server, capsys):
    assert main(["status", f"{sqs_server.endpoint}/123456789012/no-such-queue"]) == 3
    assert "does not exist" in error_line(capsys)


def test_an_sqs_endpoint_that_does_not_answer_is_exit_3(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["status", f"http://127.0.0.1:{port}/123456789012/work"]) == 3
    assert "Could not connect" in error_line(capsys)


# -- a worker run: repeated --tasks, its log ----------------------------------------------------------

def test_repeated_tasks_modules_all_run_and_the_json_log_has_pid_host_banner_and_one_word_events(tmp_path):
    # Given two task modules, a task of each on a queue, and one that always fails (dead-lettered at once)
    (tmp_path / "first_tasks.py").write_text("from sqsmaster import task\n\n@task\ndef alpha():\n    pass\n")
    (tmp_path / "second_tasks.py").write_text(
        "import time\nfrom sqsmaster import fixed, task\n\n@task\ndef beta():\n    time.sleep(2.5)\n\n"
        "@task(retry=fixed(0, max_retries=0))\ndef gamma():\n    raise RuntimeError('no')\n")
    url = sqlite(tmp_path)
    assert main(["create", url]) == 0 and main(["create", sqlite(tmp_path, "dead")]) == 0
    for name in ("alpha", "beta", "gamma"):
        assert main(["submit", url, name]) == 0
    # When a worker runs with --tasks twice, JSON logs and the log level given after the command
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQSMASTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "sqsmaster", "worker", url, "--tasks", "first_tasks", "--tasks", "second_tasks",
         "--until-empty", "--wait-time", "0", "--sqs-timeout", "3", "--dlq", sqlite(tmp_path, "dead"),
         "--log-format", "json", "--log-level", "debug"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    # Then both modules' tasks ran and the worker exited 0 with the queue empty
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    outcomes = {(line.get("task"), line.get("event")) for line in lines}
    assert {("alpha", "succeeded"), ("beta", "succeeded"), ("gamma", "dead_lettered")} <= outcomes
    # and every line says which process on which host wrote it; events are one word; the first is the banner
    assert {(line["pid"], line["host"]) for line in lines} == {(lines[0]["pid"], socket.gethostname())}
    assert all(" " not in line["event"] and "-" not in line["event"] for line in lines if "event" in line)
    assert lines[0]["message"].startswith(f"sqsmaster {__version__} worker starting")
    # and the per-beat heartbeat line (beta outlived its 1 s beat) is at DEBUG
    beats = [line for line in lines if line.get("event") == "extended"]
    assert beats and {line["level"] for line in beats} == {"DEBUG"}


# -- create: what SQS would refuse is refused on our side ------------------------------------------

@pytest.mark.parametrize("name, flags, says", [
    ("bad name", [], "'bad name'"),
    ("a" * 81, [], "at most 80"),
    ("dots.in.name", [], "'dots.in.name'"),
    ("a" * 77, ["--max-receive-count", "3"], "-dlq"),  # the queue fits, its dead-letter queue NAME-dlq does not
])
def test_create_refuses_a_queue_name_sqs_cannot_hold_as_bad_input_and_creates_nothing(
        name, flags, says, sqs_server, sqs_client, capsys):
    # Given a moto server and a queue name SQS would refuse
    url = f"{sqs_server.endpoint}/123456789012/{name}"
    before = sqs_client.list_queues().get("QueueUrls", [])
    # When a user creates it
    code = main(["create", url, *flags])
    # Then it is bad input (exit 2, not "the work failed"), one line naming the name and the rule
    assert code == 2
    line = error_line(capsys)
    assert says in line and "alphanumeric" in line
    # And nothing was created (not even the dead-letter queue)
    assert sqs_client.list_queues().get("QueueUrls", []) == before


def test_create_of_a_local_queue_whose_directory_cannot_be_made_is_one_line(capsys):
    # Given a path under /proc, where no directory can be made
    # When a user creates a sqlite:// or fq:// queue there
    for url in ("sqlite:///proc/no-such-dir/q.db?queue=work", "fq:///proc/no-such-dir/work"):
        code = main(["create", url])
        # Then one line names the path and the exit code is the one of an unreachable queue, as for fq://
        assert code == 3, url
        assert "/proc/no-such-dir" in error_line(capsys)


@pytest.mark.parametrize("argv, says", [
    (["peek", "URL", "-n", "0"], "argument -n: must be >= 1, not '0'"),
    (["peek", "URL", "-n", "-3"], "argument -n: must be >= 1, not '-3'"),
    (["redrive", "URL", "--to", "OTHER", "-n", "0"], "argument -n: must be >= 1, not '0'"),
    (["redrive", "URL", "--to", "OTHER", "-n", "-1"], "argument -n: must be >= 1, not '-1'"),
    (["submit", "URL", "T", "x=1", "x=2"], "x=2: key 'x' given twice"),
])
def test_a_count_or_a_keyword_that_means_nothing_is_refused_not_done_as_nothing(argv, says, tmp_path, capsys):
    # Given a queue and its dead-letter queue
    url = f"{sqlite(tmp_path)}&max_receive_count=2"
    assert main(["create", url]) == 0
    capsys.readouterr()
    other = sqlite(tmp_path, "work-dlq")
    # When a command is given -n 0 (or less), or the same key twice
    code = main([url if part == "URL" else other if part == "OTHER" else part for part in argv])
    # Then it is bad usage, one line, not a silent "moved 0 message(s)" / a dropped value with exit 0
    assert code == 2
    assert says in error_line(capsys)


@pytest.mark.parametrize("query, says", [
    ("?queue=a&queue=b", "'queue' given twice"),
    ("?queue=a&visibility_timeout=5&visibility_timeout=60", "'visibility_timeout' given twice"),
    ("?queue=a&visibility_timeout=abc", "visibility_timeout='abc' must be a whole number"),
])
def test_a_local_queue_url_option_given_twice_or_not_a_number_is_named(query, says, tmp_path, capsys):
    # When a user creates a sqlite:// queue with an option twice (the last would win silently) or not a number
    code = main(["create", f"sqlite://{tmp_path / 'q.db'}{query}"])
    # Then it is bad usage, one line naming the option, and nothing is created
    assert code == 2
    assert says in error_line(capsys)
    assert not (tmp_path / "q.db").exists()


@pytest.mark.parametrize("flags, says", [
    (["--queue", "URL"], "is given twice"),
    (["--queue", "OTHER", "--queue", "OTHER"], "is given twice"),
    (["--dlq", "URL"], "is also a queue the worker works on"),
])
def test_a_worker_given_a_queue_twice_or_its_own_queue_as_dlq_refuses_to_start(flags, says, tmp_path, capsys):
    # Given two queues (a dead letter sent to the queue it came from would run again, forever)
    url, other = sqlite(tmp_path), sqlite(tmp_path, "other")
    assert main(["create", url]) == 0 and main(["create", other]) == 0
    capsys.readouterr()
    # When a worker is started with one of them twice, or with its own queue as --dlq
    argv = ["worker", url, "--tasks", "tests.worker_tasks", "--until-empty",
            *[url if part == "URL" else other if part == "OTHER" else part for part in flags]]
    # Then it does not start: one line naming the queue, exit 2
    assert main(argv) == 2
    line = error_line(capsys)
    assert says in line and "queue=" in line
