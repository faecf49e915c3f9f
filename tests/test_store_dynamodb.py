"""What only the DynamoDB store has: its URL, its endpoint from the environment, its table, its TTL
attribute and the bound on every call (a frozen server)."""

from __future__ import annotations

import re
import signal
import time
import uuid

import boto3
import pytest

from sqsmaster.errors import ConfigurationError
from sqsmaster.store import AttemptRow, StoreError, open_store
from sqsmaster.store.dynamo_table import CALL_BOUND, READ_TIMEOUT

NOW = 1_800_000_000.0


@pytest.mark.parametrize("url, problem", [
    ("dynamodb://ab", "a table name is 3-255"),
    ("dynamodb://jobs/with/slashes", "a table name is 3-255"),
    ("dynamodb://jobs?regoin=eu-west-1", "unknown parameter 'regoin'"),
    ("dynamodb://jobs?keep_failed=week", "keep_failed in 'dynamodb://jobs?keep_failed=week' must be seconds"),
    ("dynamodb://jobs?read_timeout=soon", "read_timeout in 'dynamodb://jobs?read_timeout=soon' must be seconds"),
])
def test_a_bad_url_is_one_line_naming_the_problem(url, problem):
    with pytest.raises(ConfigurationError, match=re.escape(problem)) as raised:
        open_store(url)
    assert "\n" not in str(raised.value)


def test_the_endpoint_comes_from_the_environment_as_boto3_reads_it(sqs_server, monkeypatch):
    # Given no endpoint in the URL, and AWS_ENDPOINT_URL_DYNAMODB set (as for any boto3 program)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", sqs_server.endpoint)
    table = f"env-{uuid.uuid4().hex[:8]}"
    store = open_store(f"dynamodb://{table}?region=us-east-1")
    store.put_attempt(AttemptRow("m1", 1, "t", "q", "h", 1, NOW))
    # Then the table is on that endpoint
    client = boto3.client("dynamodb", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    assert table in client.list_tables()["TableNames"]
    assert [r.message_id for r in store.attempts_of("m1")] == ["m1"]
    client.delete_table(TableName=table)


def test_a_table_made_for_something_else_is_refused(sqs_server):
    client = boto3.client("dynamodb", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    table = f"other-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    with pytest.raises(StoreError, match=f"DynamoDB table {table} is not a sqsmaster job store"):
        open_store(f"dynamodb://{table}?endpoint={sqs_server.endpoint}")
    client.delete_table(TableName=table)


def test_finished_rows_carry_the_ttl_attribute_by_outcome_and_running_rows_none(sqs_server):
    # Given a store keeping successes an hour and failures a day
    table = f"ttl-{uuid.uuid4().hex[:8]}"
    store = open_store(f"dynamodb://{table}?endpoint={sqs_server.endpoint}&keep_succeeded=3600&keep_failed=86400")
    store.put_attempt(AttemptRow("ok", 1, "t", "q", "h", 1, NOW, ended=NOW + 10, outcome="succeeded"))
    store.put_attempt(AttemptRow("bad", 1, "t", "q", "h", 1, NOW, ended=NOW + 10, outcome="failed"))
    store.put_attempt(AttemptRow("run", 1, "t", "q", "h", 1, NOW))
    # Then DynamoDB's TTL will delete each when it is due, and never a running row
    client = boto3.client("dynamodb", endpoint_url=sqs_server.endpoint, region_name="us-east-1")
    items = {item["message_id"]["S"]: item for item in client.scan(TableName=table)["Items"]}
    assert items["ok"]["expires_at"] == {"N": str(int(NOW + 10 + 3600))}
    assert items["bad"]["expires_at"] == {"N": str(int(NOW + 10 + 86400))}
    assert "expires_at" not in items["run"]
    client.delete_table(TableName=table)


def test_a_call_to_a_frozen_server_gives_up_within_its_bound(frozen_moto):
    # Given a store on a server that then freezes (a network partition: connections open, no answer comes)
    process, endpoint = frozen_moto
    store = open_store(f"dynamodb://frozen?endpoint={endpoint}&region=us-east-1")
    process.send_signal(signal.SIGSTOP)
    try:
        # When a worker's writer writes a row
        started = time.monotonic()
        with pytest.raises(StoreError, match="DynamoDB table frozen: PutItem failed") as raised:
            store.put_attempt(AttemptRow("m1", 1, "t", "q", "h", 1, NOW))
        took = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGCONT)
    # Then it waited for the read timeout, and no longer than the bound (plus 10 s: a loaded 2-core machine is slow
    # to run the client's own code, and the bound is what the README promises, not a measurement)
    assert READ_TIMEOUT <= took < CALL_BOUND + 10, took
    assert "\n" not in str(raised.value)
    # And once the server answers again, so does the store. (The timed-out write, and botocore's retry of it, were
    # queued in the frozen server and may still land, in any order: that a late start never undoes an end is
    # test_store_contract.py's test_a_late_start_write_never_turns_a_finished_attempt_back_to_running, without
    # moto's unlocked races.)
    store.put_attempt(AttemptRow("m2", 1, "t", "q", "h", 1, NOW, outcome="succeeded", ended=NOW + 1))
    assert [(r.message_id, r.outcome) for r in store.attempts_of("m2")] == [("m2", "succeeded")]
