"""The DynamoDB job store's table: its URL, its bounded client, its item encoding and its creation.

:mod:`sqsmaster.store.dynamodb` is the store; this module is what it stands on.

Layout: one table, string keys ``pk`` / ``sk``::

    item       pk                sk                       other keys
    attempt    M#<message id>    attempt#<10 digits>      shard, when; running (only while it runs)
    flag       M#<message id>    flag
    worker     WORKERS           <host>:<pid>
    claim      C#<key>           claim
    schedule   S#<schedule>      fired                    (the latest slot a periodic task was sent for)
    action     ACTIONS           <at>#<ns>#<random>

``when`` is ``<started, 17 characters>#<message id>#<attempt>``: unique, and sorting as the start
time does. Two global secondary indexes, both sorted by ``when``:

- ``by_start`` (partition ``shard`` = ``s0``..``s3``, from a hash of the message id): the newest-first
  listing. A page queries the four shards downwards from the cursor and merges them; the cursor is
  the last ``when`` shown (opaque to callers), so new rows never shift a walk in progress. It carries
  only the attributes filters read (none of which a heartbeat changes), so a heartbeat costs no index
  write; a page's full rows are then read with one BatchGetItem. Why shards and not a day bucket: a
  day bucket puts all of a day's writes on one index partition (about 1,000 write units/s, and a
  throttled index throttles the table), and a newest-first walk would hop day by day with no natural
  end. Four shards take four times that write rate (a fleet writes twice per task to this index: a
  fleet would need ~2,000 task starts/s to be throttled) at the price of four small queries per page.
- ``running`` (partition ``running`` = the shard, present only while the attempt runs: a sparse
  index, keys only): running and stale rows without a scan; its size is the fleet's busy slots.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigurationError
from .base import FAILURE_TTL, NOT_FAILED, SUCCESS_TTL, JobFilter, StoreError

log = logging.getLogger(__name__)

#: Every store call is bounded: at most MAX_ATTEMPTS tries, each waiting CONNECT_TIMEOUT to connect and
#: READ_TIMEOUT for each read, plus botocore's standard-mode backoff (under 1 s before the second try): a call
#: gives up within ~2 * (2 + 5) + 1 = 15 s. The background writer calls the store; a deadline never waits on it.
#: The URL's ``read_timeout`` changes READ_TIMEOUT (a slow local server; the bound grows with it).
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
MAX_ATTEMPTS = 2
CALL_BOUND = MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + 1.0

#: How long a new table may take to become ACTIVE (AWS takes seconds; moto none).
CREATE_WAIT = 120

#: The attribute DynamoDB's TTL deletes items by (epoch seconds).
TTL_ATTRIBUTE = "expires_at"

#: The global secondary indexes: newest-first listing (sharded), and the sparse index of running attempts.
BY_START, RUNNING = "by_start", "running"

#: Attempt attributes the listing index carries, so filters are applied to index items without reading the rows;
#: none of them changes on a heartbeat, so a heartbeat never writes to the index.
LISTED = ["message_id", "attempt", "task", "queue", "host", "pid", "started", "ended", "outcome", "exception",
          "kwargs"]

#: Index partitions of the listing (see :mod:`sqsmaster.store.dynamodb`). Changing it orphans rows already written.
SHARDS = 4

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_PARAMS = {"region", "endpoint", "keep_succeeded", "keep_failed", "read_timeout"}


@dataclass(frozen=True)
class TableUrl:
    """What ``dynamodb://TABLE?region=R&endpoint=URL&keep_succeeded=S&keep_failed=S&read_timeout=S`` says."""

    table: str
    region: str | None = None
    endpoint: str | None = None
    keep_succeeded: float = SUCCESS_TTL
    keep_failed: float = FAILURE_TTL
    read_timeout: float = READ_TIMEOUT


def parse_table_url(url: str) -> TableUrl:
    """Parse a ``dynamodb://`` URL; ConfigurationError naming what is wrong with it."""
    parts = urlsplit(url)
    table = unquote(parts.netloc + parts.path.rstrip("/"))
    if parts.scheme != "dynamodb" or not _TABLE_NAME.fullmatch(table):
        raise ConfigurationError(f"not a DynamoDB job store URL (dynamodb://TABLE?region=...): {url!r} "
                                 "(a table name is 3-255 of A-Z a-z 0-9 _ . -)")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ConfigurationError(f"unknown parameter {unknown[0]!r} in {url!r} (known: {', '.join(sorted(_PARAMS))})")
    keep = {}
    for name in ("keep_succeeded", "keep_failed", "read_timeout"):
        if name in params:
            try:
                keep[name] = float(params[name])
            except ValueError:
                raise ConfigurationError(f"{name} in {url!r} must be seconds, not {params[name]!r}") from None
    return TableUrl(table, params.get("region") or None, params.get("endpoint") or None, **keep)


def make_client(where: TableUrl) -> Any:
    """A DynamoDB client whose every call is bounded (see :data:`CALL_BOUND`).

    The endpoint is the URL's ``endpoint``, else what boto3 reads itself (``AWS_ENDPOINT_URL_DYNAMODB``,
    ``AWS_ENDPOINT_URL``, the config file). For an endpoint that is not AWS's and no credentials configured,
    dummy credentials are used: local servers (moto, DynamoDB Local) check none.
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=where.read_timeout,
                    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}, max_pool_connections=16)
    kwargs: dict[str, Any] = {"region_name": where.region or session.region_name or "us-east-1", "config": config}
    if where.endpoint:
        kwargs["endpoint_url"] = where.endpoint
    endpoint = where.endpoint or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "amazonaws.com" not in endpoint and session.get_credentials() is None:
        kwargs.update(aws_access_key_id="sqsmaster", aws_secret_access_key="sqsmaster")
    return session.client("dynamodb", **kwargs)


# -- keys and cursors --

def when_of(started: float, message_id: str, attempt: int) -> str:
    """The indexes' sort key: unique, and sorting as the start time does."""
    return f"{started:017.6f}#{message_id}#{attempt:010d}"


def shard_of(message_id: str) -> str:
    return f"s{zlib.crc32(message_id.encode()) % SHARDS}"


def attempt_key(message_id: str, attempt: int) -> dict[str, Any]:
    return {"pk": {"S": f"M#{message_id}"}, "sk": {"S": f"attempt#{attempt:010d}"}}


def encode_cursor(when: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([when]).encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        [when] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return str(when)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a page cursor of this store: {cursor!r}") from exc


# -- items: DynamoDB's typed values from and to plain Python ones --

def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values for ``values``; None is left out (DynamoDB has no use for it here)."""
    return {name: _to_value(value) for name, value in values.items() if value is not None}


def _to_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (list, tuple)):
        return {"L": [_to_value(v) for v in value]}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def from_item(item: Mapping[str, Any], types: Mapping[str, type]) -> dict[str, Any]:
    """Plain values of ``item``'s attributes named in ``types`` (each converted to its type: DynamoDB
    keeps numbers as decimals, so ``3.0`` may come back as ``3``)."""
    found = {}
    for name, kind in types.items():
        if name in item:
            found[name] = _from_value(item[name], kind)
    return found


def _from_value(value: Mapping[str, Any], kind: type) -> Any:
    if "N" in value:
        return kind(float(value["N"])) if kind is int else float(value["N"])
    if "L" in value:
        return [_from_value(v, str) for v in value["L"]]
    if "BOOL" in value:
        return value["BOOL"]
    return value.get("S")


def field_types(cls: Any) -> dict[str, type]:
    """``{field: int | float | list | str}`` of a row dataclass, from its annotations."""
    kinds: dict[str, type] = {}
    for name, annotation in cls.__annotations__.items():
        text = str(annotation)
        kinds[name] = list if "list" in text else float if "float" in text else int if "int" in text else str
    return kinds


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size in bytes as DynamoDB counts it for capacity units (names + values; a number takes
    about one byte per two significant digits plus one)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    if "S" in value:
        return len(value["S"].encode())
    if "N" in value:
        digits = value["N"].lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if "L" in value:
        return 3 + sum(1 + _value_size(v) for v in value["L"])
    return 1


def worker_parts(worker: str | None) -> tuple[str, int] | None:
    """``(host, pid)`` of a ``host:pid`` worker filter that DynamoDB can apply as it is written (None: any other
    text, left to :func:`~sqsmaster.store.base.matches`, which compares the text itself)."""
    host, _, pid = (worker or "").rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() and str(int(pid)) == pid else None


def filter_expression(where: JobFilter, names: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """A query's FilterExpression for the simple parts of ``where`` (equalities, substrings, the status),
    with ``names`` and ``values`` (the key condition's) extended: the arguments to add to the Query."""
    clauses = []
    for name, value in (("task", where.task), ("queue", where.queue), ("message_id", where.message_id)):
        if value is not None:
            clauses.append(f"#{name} = :{name}")
            values[f":{name}"] = {"S": value}
    worker = worker_parts(where.worker)
    if worker is not None:
        clauses.append("#host = :host AND #pid = :pid")
        values.update({":host": {"S": worker[0]}, ":pid": {"N": str(worker[1])}})
    for name, value in (("kwargs", where.text), ("exception", where.exception)):
        if value is not None:
            clauses.append(f"contains(#{name}, :{name})")
            values[f":{name}"] = {"S": value}
    if where.status == "failed":
        words = {f":nf{i}": {"S": word} for i, word in enumerate(sorted(NOT_FAILED))}
        clauses.append(f"attribute_exists(#outcome) AND NOT #outcome IN ({', '.join(words)})")
        values.update(words)
    elif where.status is not None:
        clauses.append("#outcome = :outcome")
        values[":outcome"] = {"S": where.status}
    text = " AND ".join(clauses)
    names.update({f"#{n}": n for n in ("task", "queue", "message_id", "kwargs", "exception", "outcome", "host", "pid")
                  if f"#{n}" in text})  # DynamoDB refuses a name no expression uses
    request = {"ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
    return {**request, "FilterExpression": text} if text else request


# -- the table --

#: Items a query reads per call while walking an index.
_SCAN = 200


def when_range(where: JobFilter, below: str) -> tuple[str, str]:
    """The listing index's ``when`` range for ``where``'s since/until, under ``below`` (a cursor)."""
    low = f"{where.since:017.6f}" if where.since is not None else "0"
    if where.until is not None:
        below = min(below, f"{where.until:017.6f}$")  # '$' sorts after '#': every row started at `until`
    return low, below


def listing_query(shard: int, low: str, below: str, where: JobFilter) -> dict[str, Any]:
    """A Query of one shard of the listing index, newest first, ``low <= when <= below``, filtered."""
    request: dict[str, Any] = {
        "IndexName": BY_START, "ScanIndexForward": False, "Limit": _SCAN,
        "KeyConditionExpression": "#shard = :shard AND #when BETWEEN :low AND :below"}
    request.update(filter_expression(where, {"#shard": "shard", "#when": "when"},
                                     {":shard": {"S": f"s{shard}"}, ":low": {"S": low}, ":below": {"S": below}}))
    return request


def _index(name: str, partition: str, projection: dict[str, Any]) -> dict[str, Any]:
    return {"IndexName": name, "Projection": projection,
            "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"},
                          {"AttributeName": "when", "KeyType": "RANGE"}]}


def table_definition(table: str) -> dict[str, Any]:
    """CreateTable's arguments for a job store table (on-demand capacity: a fleet's load comes in bursts)."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"}
                                 for name in ("pk", "sk", "shard", "when", "running")],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            _index(BY_START, "shard", {"ProjectionType": "INCLUDE", "NonKeyAttributes": LISTED}),
            _index(RUNNING, "running", {"ProjectionType": "KEYS_ONLY"}),
        ],
    }


def describe(client: Any, table: str) -> dict[str, Any] | None:
    """The table's description, None if it does not exist. Raises the client's errors."""
    from botocore.exceptions import ClientError

    try:
        return dict(client.describe_table(TableName=table)["Table"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def check_layout(description: Mapping[str, Any], url: str) -> None:
    """StoreError unless the table has this store's keys and indexes (a table made for something else)."""
    keys = sorted(k["AttributeName"] for k in description.get("KeySchema", []))
    indexes = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
    if keys != ["pk", "sk"] or not {BY_START, RUNNING} <= indexes:
        raise StoreError(f"job store {url}: DynamoDB table {description.get('TableName')} is not a sqsmaster job "
                         f"store (keys {keys}, indexes {sorted(indexes)}; expected pk/sk, {BY_START}, {RUNNING})")


def create_table(client: Any, table: str) -> list[str]:
    """Create the job store's table (on demand, with its indexes) and switch on TTL; idempotent.
    Returns what was done, one line each, for ``sqsmaster store create`` to print."""
    done = []
    if describe(client, table) is None:
        try:
            client.create_table(**table_definition(table))
            done.append(f"created DynamoDB table {table} (PAY_PER_REQUEST; key pk/sk; indexes {BY_START} "
                        f"(shard/when), {RUNNING} (sparse: running/when))")
        except client.exceptions.ResourceInUseException:  # another process created it meanwhile
            done.append(f"DynamoDB table {table} already exists")
    else:
        done.append(f"DynamoDB table {table} already exists")
    # until the table is ACTIVE its TTL cannot be set nor items written (one DescribeTable once it is)
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": CREATE_WAIT})
    ttl = client.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == TTL_ATTRIBUTE:
        done.append(f"TTL on {TTL_ATTRIBUTE} already enabled")
    else:
        client.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True,
                                                                             "AttributeName": TTL_ATTRIBUTE})
        done.append(f"enabled TTL on {TTL_ATTRIBUTE} (DynamoDB deletes expired rows within about two days)")
    log.info("job store table %s: %s", table, "; ".join(done))
    return done
