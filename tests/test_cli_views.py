"""``sqsmaster jobs``, ``job``, ``workers`` and ``store create``, run as a user runs them (a subprocess),
on both stores. The stores are filled with rows directly: recording them is the worker's job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from sqsmaster.store import AttemptRow, WorkerRow, open_store

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/solver-jobs"
TRACEBACK = 'Traceback (most recent call last):\n  File "tasks.py", line 9, in fetch\nValueError: bad input\n'


def sqsmaster(*args: str, store: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run the command with a clean environment for the store (no SQSMASTER_STORE unless given)."""
    environment = {k: v for k, v in os.environ.items() if k != "SQSMASTER_STORE"}
    environment.update(env)
    command = [sys.executable, "-m", "sqsmaster", *args] + (["--store", store] if store else [])
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)


@pytest.fixture(params=["sqlite", "dynamodb"])
def fleet(request, make_store_url) -> tuple[str, float]:
    """A store holding a small fleet's rows, written just now: (url, now)."""
    url, now = make_store_url(request.param), time.time()
    store = open_store(url)
    # running: 200 s in, last heartbeat 10 s ago, hard timeout in 100 s, lease 60 s
    store.put_attempt(AttemptRow("m-run", 1, "solve", QUEUE, "h1", 7, now - 200, deadline=now + 100, lease=60.0,
                                 last_heartbeat=now - 10, heartbeats=6, kwargs='{"n": 1}'))
    # its worker died: no heartbeat for 500 s, longer than its 60 s lease
    store.put_attempt(AttemptRow("m-dead", 2, "solve", QUEUE, "h2", 8, now - 1000, deadline=now + 100, lease=60.0,
                                 last_heartbeat=now - 500, heartbeats=16))
    for attempt, outcome in ((1, "failed"), (2, "failed")):
        store.put_attempt(AttemptRow("m-fail", attempt, "fetch", QUEUE, "h2", 8, now - 4000 + attempt * 100,
                                     ended=now - 3990 + attempt * 100, runtime=10.0, outcome=outcome, action="retry",
                                     exception="ValueError: bad input", traceback=TRACEBACK))
    store.put_attempt(AttemptRow("m-ok", 1, "solve", "https://q/other", "h1", 7, now - 7200, ended=now - 7100,
                                 runtime=100.0, outcome="succeeded", action="deleted"))
    store.put_worker(WorkerRow("h1", 7, now - 5000, now - 5, "0.1.0", [QUEUE], concurrency=2, busy=1))
    store.put_worker(WorkerRow("h2", 8, now - 5000, now - 900, "0.1.0", [QUEUE], concurrency=1, busy=1))
    store.close()
    return url, now


def ids(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [job["message_id"] for job in json.loads(result.stdout)["jobs"]]


def test_jobs_shows_running_rows_with_their_clocks_and_a_dead_workers_row_as_stale(fleet):
    url, now = fleet
    # When an operator lists the jobs
    result = sqsmaster("jobs", store=url)
    late = time.time() - now  # how long after the rows were written the command may have looked at them
    # Then one aligned line per attempt, newest first, under a header: every column starts where its title does
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["m-run", "m-dead", "m-fail", "m-fail", "m-ok"]
    starts = [header.index(title) for title in ("TRY", "TASK", "STATUS", "STARTED", "TIME", "LEFT", "HEARTBEAT",
                                                 "WORKER", "QUEUE")]
    assert all(line[at - 1] == " " and line[at] != " " for line in lines for at in starts)
    cells = [[line[a:b].strip() for a, b in zip([0, *starts], [*starts, None])] for line in lines]
    # And the running one shows its status, how long it has run, the time left and its heartbeat's age
    _, _, _, status, started, elapsed, left, beat, worker, queue = cells[0]
    assert (status, worker, queue) == ("running", "h1:7", "solver-jobs")
    assert 200 <= seconds(started) <= 200 + late and 200 <= seconds(elapsed) <= 200 + late
    assert 100 - late - 1 <= seconds(left) <= 100 and 10 <= seconds(beat) <= 10 + late
    # And the one whose worker died is stale, with no time left shown
    _, _, _, status, started, elapsed, left, beat, worker, _ = cells[1]
    assert (status, left, worker) == ("stale", "-", "h2:8")
    assert 1000 <= seconds(started) <= 1000 + late and 500 <= seconds(beat) <= 500 + late


def seconds(shown: str) -> int:
    """The seconds of a shown duration (``3m20s``, ``3m20s ago``), read back."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", shown.replace(" ago", "")))


def test_jobs_json_filters_by_status_task_queue_and_since(fleet):
    url, now = fleet
    running = json.loads(sqsmaster("jobs", "--running", "--json", store=url).stdout)["jobs"]
    late = time.time() - now
    assert [(j["message_id"], j["status"]) for j in running] == [("m-run", "running")]
    assert 100 - late <= running[0]["time_left"] <= 100 and 10 <= running[0]["heartbeat_age"] <= 10 + late
    assert ids(sqsmaster("jobs", "--stale", "--json", store=url)) == ["m-dead"]
    assert ids(sqsmaster("jobs", "--failed", "--since", "2h", "--json", store=url)) == ["m-fail", "m-fail"]
    assert ids(sqsmaster("jobs", "--task", "solve", "--queue", "https://q/other", "--json", store=url)) == ["m-ok"]


def test_jobs_pages_with_limit_and_cursor_and_reads_the_store_from_the_environment(fleet):
    url, now = fleet
    first = json.loads(sqsmaster("jobs", "--limit", "3", "--json", SQSMASTER_STORE=url).stdout)
    rest = json.loads(sqsmaster("jobs", "--limit", "3", "--cursor", first["cursor"], "--json", store=url).stdout)
    assert [j["message_id"] for j in first["jobs"] + rest["jobs"]] == ["m-run", "m-dead", "m-fail", "m-fail", "m-ok"]
    assert rest["cursor"] is None


def test_job_shows_every_attempt_oldest_first_with_its_traceback(fleet):
    url, now = fleet
    result = sqsmaster("job", "m-fail", store=url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("attempt 1 of m-fail") < result.stdout.index("attempt 2 of m-fail")
    assert result.stdout.count('    File "tasks.py", line 9, in fetch') == 2
    assert "exception:    ValueError: bad input" in result.stdout
    attempts = json.loads(sqsmaster("job", "m-fail", "--json", store=url).stdout)["attempts"]
    assert [(a["attempt"], a["status"], a["traceback"]) for a in attempts] == [(1, "failed", TRACEBACK),
                                                                              (2, "failed", TRACEBACK)]
    missing = sqsmaster("job", "no-such-message", store=url)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip().splitlines() == ["sqsmaster: error: no attempt of message no-such-message in the "
                                                   "job store"]


def test_workers_lists_each_process_and_flags_the_silent_one(fleet):
    url, now = fleet
    result = sqsmaster("workers", store=url)
    late = time.time() - now
    assert result.returncode == 0, result.stderr
    header, alive, silent = result.stdout.splitlines()
    assert header.split()[:4] == ["WORKER", "STATE", "BUSY", "LAST"]
    assert alive.split()[:3] == ["h1:7", "alive", "1/2"] and 5 <= seconds(alive.split()[3]) <= 5 + late
    assert silent.split()[:3] == ["h2:8", "stale", "1/1"] and 900 <= seconds(silent.split()[3]) <= 900 + late
    workers = json.loads(sqsmaster("workers", "--json", "--stale-after", "3600", store=url).stdout)["workers"]
    assert [(w["worker"], w["state"], w["queues"]) for w in workers] == [("h1:7", "alive", [QUEUE]),
                                                                        ("h2:8", "alive", [QUEUE])]


@pytest.mark.parametrize("command", [["jobs"], ["job", "m1"], ["workers"]])
def test_a_view_without_a_store_exits_2_with_one_line(command):
    result = sqsmaster(*command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == "sqsmaster: error: no job store given: use --store URL or set SQSMASTER_STORE"


@pytest.mark.parametrize("kind", ["sqlite", "dynamodb"])
def test_a_view_of_a_store_that_does_not_exist_exits_3_and_does_not_create_it(kind, make_store_url):
    url = make_store_url(kind)
    result = sqsmaster("jobs", store=url)
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1
    assert url in result.stderr
    if kind == "dynamodb":
        assert f"run: sqsmaster store create '{url}'" in result.stderr
    assert sqsmaster("workers", store=url).returncode == 3  # still not there


def test_store_create_makes_the_table_with_ttl_says_so_and_is_idempotent(make_store_url, sqs_server):
    import boto3

    url = make_store_url("dynamodb")
    table = url.split("//", 1)[1].split("?", 1)[0]
    made = sqsmaster("store", "create", url)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0].startswith(f"created DynamoDB table {table} (PAY_PER_REQUEST")
    again = sqsmaster("store", "create", url)
    assert again.stdout.splitlines() == [f"DynamoDB table {table} already exists", "TTL on expires_at already enabled"]
    client: Any = boto3.client("dynamodb", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert sqsmaster("jobs", store=url).stdout.strip() == "no attempts match"
    bad = sqsmaster("store", "create", "dynamodb://x")
    assert bad.returncode == 2 and "not a DynamoDB job store URL" in bad.stderr
