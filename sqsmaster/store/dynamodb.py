"""``dynamodb://TABLE?region=R&endpoint=URL``: the job store of a fleet, in one DynamoDB table.

Parameters: ``region`` (else the AWS configuration's), ``endpoint`` (moto, DynamoDB Local; else
boto3's own ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL``), ``keep_succeeded`` /
``keep_failed`` (seconds a finished attempt is kept, for the TTL attribute; defaults 1 and 7 days),
``read_timeout`` (seconds, default 5: a slow local server may need more).
``create=True`` (and ``sqsmaster store create URL``) makes the table, on-demand, with TTL on.

The table's layout (items, keys, the two indexes and why) is described in
:mod:`sqsmaster.store.dynamo_table`, beside its definition.

Claims are conditional writes (``attribute_not_exists(pk) OR expires <= :now OR owner = :owner``):
atomic across hosts. Workers share one partition (a fleet's worker rows are few and write rarely);
so do actions. Every finished attempt, flag, claim and worker row carries ``expires_at``: DynamoDB's
TTL deletes it on AWS (within about two days of it); :meth:`DynamoStore.expire` deletes what is due
at once (for moto, and for an operator who wants it now), reading the listing index below
``now - ttl`` rather than scanning. Every call is bounded (:data:`~sqsmaster.store.dynamo_table.CALL_BOUND`:
about 15 s); any failure is a :class:`StoreError` naming the table.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Iterator

from .base import (
    FAILURE_TTL,
    SUCCESS_TTL,
    ActionRow,
    AttemptRow,
    FiredRow,
    Flag,
    JobFilter,
    Page,
    StoreError,
    WorkerRow,
    matches,
)
from .dynamo_table import (
    RUNNING,
    SHARDS,
    TTL_ATTRIBUTE,
    attempt_key,
    check_layout,
    create_table,
    decode_cursor,
    describe,
    encode_cursor,
    field_types,
    from_item,
    listing_query,
    make_client,
    parse_table_url,
    shard_of,
    to_item,
    when_of,
    when_range,
    worker_parts,
)

#: DynamoDB's bounds on one BatchGetItem / BatchWriteItem.
BATCH_GET, BATCH_WRITE = 100, 25

_ATTEMPT = field_types(AttemptRow)
_WORKER = field_types(WorkerRow)
_FLAG = field_types(Flag)
_ACTION = field_types(ActionRow)
_FIRED = field_types(FiredRow)
_HIGHEST = "~"  # sorts after every ``when`` (digits)


def _attempt_row(item: dict[str, Any]) -> AttemptRow:
    """The row of an attempt item. ``task`` is None for a message that did not decode, and an item leaves
    None out: it is given back here (AttemptRow requires it)."""
    return AttemptRow(**{"task": None, **from_item(item, _ATTEMPT)})


class DynamoStore:
    """The job store in one DynamoDB table; one client, safe to share between threads."""

    def __init__(self, url: str, create: bool = True) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.url = url
        self.where = parse_table_url(url)
        self.table = self.where.table
        self._errors = (BotoCoreError, ClientError)
        self._client = make_client(self.where)
        #: What opening the store created (lines for an operator), empty when the table was there.
        self.made: list[str] = []
        description = self._guard("DescribeTable", describe, client=self._client, table=self.table)
        if description is None:
            if not create:
                raise StoreError(f"job store {url}: DynamoDB table {self.table} does not exist "
                                 f"(run: sqsmaster store create '{url}')")
            self.made = self.create()
        else:
            check_layout(description, url)
            if description.get("TableStatus") == "CREATING":  # another process is making it: wait, as it does
                self.create()

    def create(self) -> list[str]:
        """Create the table and switch its TTL on (idempotent); what was done, one line each."""
        return self._guard("CreateTable", create_table, client=self._client, table=self.table)

    # -- calls: every failure one StoreError naming the table --
    def _guard(self, operation: str, call: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return call(**kwargs)
        except self._errors as exc:
            raise StoreError(self._describe_error(operation, exc)) from exc

    def _describe_error(self, operation: str, exc: Exception) -> str:
        error = (getattr(exc, "response", None) or {}).get("Error", {})  # a timeout has no response
        if error.get("Code") == "ResourceNotFoundException":
            return (f"job store {self.url}: DynamoDB table {self.table} does not exist "
                    f"(run: sqsmaster store create '{self.url}')")
        detail = f"{error.get('Code')}: {error.get('Message')}" if error else str(exc)
        return f"job store {self.url}: DynamoDB table {self.table}: {operation} failed: {' '.join(detail.split())}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self._client, "".join("_" + c.lower() if c.isupper() else c for c in operation)[1:])
        return self._guard(operation, method, TableName=self.table, **kwargs)

    def _write_if(self, operation: str, **kwargs: Any) -> bool:
        """A conditional write; False when its condition did not hold."""
        try:
            self._call(operation, **kwargs)
            return True
        except StoreError as exc:
            cause = exc.__cause__
            if (getattr(cause, "response", None) or {}).get("Error", {}).get("Code") == \
                    "ConditionalCheckFailedException":
                return False
            raise

    # -- writes --
    def put_attempt(self, row: AttemptRow) -> None:
        """As the protocol says: the running row's write is conditional on the row having no outcome."""
        if row.outcome is not None:
            self._call("PutItem", Item=self._attempt_item(row))
        else:
            self._write_if("PutItem", Item=self._attempt_item(row), ConditionExpression="attribute_not_exists(#o)",
                           ExpressionAttributeNames={"#o": "outcome"})

    def put_attempts(self, rows: Iterable[AttemptRow]) -> None:
        """Write many rows, 25 per request (BatchWriteItem, which takes no conditions: each row replaces what is
        there, finished or not): for imports and bulk fills, not for a worker's writes."""
        self._batch_write([{"PutRequest": {"Item": self._attempt_item(row)}} for row in rows])

    def _attempt_item(self, row: AttemptRow) -> dict[str, Any]:
        item = to_item(asdict(row))
        item.update(attempt_key(row.message_id, row.attempt))
        item["shard"] = {"S": shard_of(row.message_id)}
        item["when"] = {"S": when_of(row.started, row.message_id, row.attempt)}
        if row.outcome is None:
            item["running"] = item["shard"]
        elif row.ended is not None:
            keep = self.where.keep_succeeded if row.outcome == "succeeded" else self.where.keep_failed
            item[TTL_ATTRIBUTE] = {"N": str(int(row.ended + keep))}
        return item

    def heartbeat(self, message_id: str, attempt: int, at: float, heartbeats: int) -> None:
        self._write_if("UpdateItem", Key=attempt_key(message_id, attempt),
                       UpdateExpression="SET #last = :at, #beats = :n",
                       ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#outcome) AND "
                                           "(attribute_not_exists(#beats) OR #beats <= :n)",
                       ExpressionAttributeNames={"#last": "last_heartbeat", "#beats": "heartbeats",
                                                 "#outcome": "outcome"},
                       ExpressionAttributeValues={":at": {"N": repr(at)}, ":n": {"N": str(heartbeats)}})

    def put_worker(self, row: WorkerRow) -> None:
        item = to_item(asdict(row))
        item.update(pk={"S": "WORKERS"}, sk={"S": row.worker},
                    expires_at={"N": str(int(row.last_seen + self.where.keep_failed))})
        self._call("PutItem", Item=item)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), BATCH_WRITE):
            self._batch("BatchWriteItem", "UnprocessedItems", {self.table: requests[start:start + BATCH_WRITE]})

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET):
            for answer in self._batch("BatchGetItem", "UnprocessedKeys",
                                      {self.table: {"Keys": keys[start:start + BATCH_GET], "ConsistentRead": True}}):
                found += answer.get("Responses", {}).get(self.table, [])
        return found

    def _batch(self, operation: str, left_key: str, pending: dict[str, Any]) -> list[dict[str, Any]]:
        """One batch request, its unprocessed part (what DynamoDB leaves under throttling) retried a few times
        with a backoff (~3 s in all); the answers."""
        method = self._client.batch_write_item if operation == "BatchWriteItem" else self._client.batch_get_item
        answers = []
        for attempt in range(7):
            answers.append(self._guard(operation, method, RequestItems=pending))
            pending = answers[-1].get(left_key) or {}
            if not pending:
                return answers
            time.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise StoreError(f"job store {self.url}: DynamoDB table {self.table}: {operation} left part of its "
                         "request unprocessed (throttled)")

    # -- reads --
    def attempts(self, where: JobFilter, now: float, limit: int = 50, cursor: str | None = None) -> Page:
        below = decode_cursor(cursor) if cursor is not None else _HIGHEST
        found = []
        for when, row in self._matching(where, now, below):
            found.append((when, row))
            if len(found) > limit:  # one more than a page tells whether there is a next page
                break
        page = found[:limit]
        rows = self._full_rows([row for _, row in page]) if where.status not in ("running", "stale") else \
            [row for _, row in page]
        more = len(found) > limit and page
        return Page(rows, encode_cursor(page[-1][0]) if more else None)

    def count(self, where: JobFilter, now: float) -> int:
        if where.status in ("running", "stale") or (where.worker is not None and worker_parts(where.worker) is None):
            return sum(1 for _ in self._matching(where, now, _HIGHEST))
        # every other part of a filter is DynamoDB's to apply: it counts, and sends no row back
        total = 0
        for shard in range(SHARDS):
            request = {**listing_query(shard, *when_range(where, _HIGHEST), where), "Select": "COUNT"}
            del request["Limit"]
            total += sum(int(answer.get("Count", 0)) for answer in self._pages(request))
        return total

    def _matching(self, where: JobFilter, now: float, below: str) -> Iterator[tuple[str, AttemptRow]]:
        """``(when, row)`` of matching attempts with ``when < below``, newest first. Rows from the listing
        index carry only the listed attributes; running rows are read in full (staleness needs them)."""
        if where.status in ("running", "stale"):
            yield from self._running(where, now, below)
            return
        low, below = when_range(where, below)
        walks = [self._walk(shard, low, below, where) for shard in range(SHARDS)]
        for item in heapq.merge(*walks, key=lambda item: item["when"]["S"], reverse=True):
            row = _attempt_row(item)
            if matches(row, where, now):
                yield item["when"]["S"], row

    def _walk(self, shard: int, low: str, below: str, where: JobFilter) -> Iterator[dict[str, Any]]:
        """One shard of the listing index, newest first, from just below ``below`` down to ``low``; the
        filter's simple parts are applied by DynamoDB (:func:`matches` checks everything again)."""
        for answer in self._pages(listing_query(shard, low, below, where)):
            yield from (item for item in answer.get("Items", []) if item["when"]["S"] < below)

    def _running(self, where: JobFilter, now: float, below: str) -> Iterator[tuple[str, AttemptRow]]:
        keys = []
        for shard in range(SHARDS):
            request: dict[str, Any] = {
                "IndexName": RUNNING, "KeyConditionExpression": "#running = :shard",
                "ExpressionAttributeNames": {"#running": "running"},
                "ExpressionAttributeValues": {":shard": {"S": f"s{shard}"}}}
            keys += [{"pk": item["pk"], "sk": item["sk"]} for item in self._query_all(request)
                     if item["when"]["S"] < below]
        items = sorted(self._batch_get(keys), key=lambda item: item["when"]["S"], reverse=True)
        for item in items:
            row = _attempt_row(item)
            if matches(row, where, now):
                yield item["when"]["S"], row

    def _full_rows(self, rows: list[AttemptRow]) -> list[AttemptRow]:
        """The rows themselves (the listing index carries only some attributes), in ``rows``' order;
        a row deleted since it was listed is left out."""
        items = self._batch_get([attempt_key(row.message_id, row.attempt) for row in rows])
        by_key = {(item["pk"]["S"], item["sk"]["S"]): item for item in items}
        full = []
        for row in rows:
            key = attempt_key(row.message_id, row.attempt)
            item = by_key.get((key["pk"]["S"], key["sk"]["S"]))
            if item is not None:
                full.append(_attempt_row(item))
        return full

    def attempts_of(self, message_id: str) -> list[AttemptRow]:
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :attempt)", "ConsistentRead": True,
            "ExpressionAttributeValues": {":pk": {"S": f"M#{message_id}"}, ":attempt": {"S": "attempt#"}}}
        return [_attempt_row(item) for item in self._query_all(request)]

    def _query_all(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return [item for answer in self._pages(request) for item in answer.get("Items", [])]

    def _pages(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Each answer of a Query, following ``LastEvaluatedKey`` to the end."""
        while True:
            answer = self._call("Query", **request)
            yield answer
            if "LastEvaluatedKey" not in answer:
                return
            request = {**request, "ExclusiveStartKey": answer["LastEvaluatedKey"]}

    def workers(self) -> list[WorkerRow]:
        items = self._query_all({"KeyConditionExpression": "pk = :pk", "ConsistentRead": True,
                                 "ExpressionAttributeValues": {":pk": {"S": "WORKERS"}}})
        rows = [WorkerRow.from_dict(from_item(item, _WORKER)) for item in items]
        return sorted(rows, key=lambda row: row.last_seen, reverse=True)

    # -- flags --
    def set_flag(self, flag: Flag) -> None:
        item = to_item(asdict(flag))
        item.update(pk={"S": f"M#{flag.message_id}"}, sk={"S": "flag"},
                    expires_at={"N": str(int(flag.at + self.where.keep_failed))})
        self._call("PutItem", Item=item)

    def flags(self, message_ids: Iterable[str]) -> dict[str, Flag]:
        keys = [{"pk": {"S": f"M#{mid}"}, "sk": {"S": "flag"}} for mid in dict.fromkeys(message_ids)]
        flags = [Flag(**from_item(item, _FLAG)) for item in self._batch_get(keys)]
        return {flag.message_id: flag for flag in flags if flag.done is None}

    def flag_done(self, message_id: str, at: float, ordered: float | None = None) -> None:
        condition = "attribute_exists(pk) AND attribute_not_exists(#done)"
        names, values = {"#done": "done"}, {":at": {"N": repr(at)}}
        if ordered is not None:  # only the order carried out, not a newer one set meanwhile
            condition += " AND #ordered = :ordered"
            names["#ordered"], values[":ordered"] = "at", {"N": repr(ordered)}
        self._write_if("UpdateItem", Key={"pk": {"S": f"M#{message_id}"}, "sk": {"S": "flag"}},
                       UpdateExpression="SET #done = :at", ExpressionAttributeNames=names,
                       ConditionExpression=condition, ExpressionAttributeValues=values)

    # -- claims --
    def claim(self, key: str, owner: str, now: float, ttl: float) -> bool:
        item = {"pk": {"S": f"C#{key}"}, "sk": {"S": "claim"}, "owner": {"S": owner},
                "expires": {"N": repr(now + ttl)}, TTL_ATTRIBUTE: {"N": str(int(now + ttl + self.where.keep_failed))}}
        return self._write_if("PutItem", Item=item,
                              ConditionExpression="attribute_not_exists(pk) OR #expires <= :now OR #owner = :owner",
                              ExpressionAttributeNames={"#owner": "owner", "#expires": "expires"},
                              ExpressionAttributeValues={":now": {"N": repr(now)}, ":owner": {"S": owner}})

    def renew(self, key: str, owner: str, now: float, ttl: float) -> bool:
        return self._write_if("UpdateItem", Key={"pk": {"S": f"C#{key}"}, "sk": {"S": "claim"}},
                              UpdateExpression="SET #expires = :expires, #expires_at = :expires_at",
                              ConditionExpression="#owner = :owner AND #expires > :now",
                              ExpressionAttributeNames={"#owner": "owner", "#expires": "expires",
                                                        "#expires_at": TTL_ATTRIBUTE},
                              ExpressionAttributeValues={
                                  ":now": {"N": repr(now)}, ":owner": {"S": owner},
                                  ":expires": {"N": repr(now + ttl)},
                                  ":expires_at": {"N": str(int(now + ttl + self.where.keep_failed))}})

    def release(self, key: str, owner: str) -> bool:
        return self._write_if("DeleteItem", Key={"pk": {"S": f"C#{key}"}, "sk": {"S": "claim"}},
                              ConditionExpression="#owner = :owner", ExpressionAttributeNames={"#owner": "owner"},
                              ExpressionAttributeValues={":owner": {"S": owner}})

    def holder(self, key: str, now: float) -> str | None:
        item = self._call("GetItem", Key={"pk": {"S": f"C#{key}"}, "sk": {"S": "claim"}},
                          ConsistentRead=True).get("Item")
        if item is None or float(item["expires"]["N"]) <= now:
            return None
        return str(item["owner"]["S"])

    # -- periodic tasks --
    def mark_fired(self, row: FiredRow) -> bool:
        item = to_item(asdict(row))
        item.update(pk={"S": f"S#{row.schedule}"}, sk={"S": "fired"})
        return self._write_if("PutItem", Item=item, ConditionExpression="attribute_not_exists(pk) OR #slot < :slot",
                              ExpressionAttributeNames={"#slot": "slot"},
                              ExpressionAttributeValues={":slot": {"N": repr(row.slot)}})

    def fired(self, schedule: str) -> FiredRow | None:
        item = self._call("GetItem", Key={"pk": {"S": f"S#{schedule}"}, "sk": {"S": "fired"}},
                          ConsistentRead=True).get("Item")
        return None if item is None else FiredRow(**from_item(item, _FIRED))

    # -- audit and housekeeping --
    def record_action(self, action: ActionRow) -> None:
        # the clock's nanoseconds and a random part keep two actions in one instant apart, in order
        order = f"{action.at:017.6f}#{time.time_ns():020d}#{os.urandom(4).hex()}"
        item = to_item(asdict(action))
        item.update(pk={"S": "ACTIONS"}, sk={"S": order})
        self._call("PutItem", Item=item)

    def actions(self, limit: int = 100) -> list[ActionRow]:
        answer = self._call("Query", KeyConditionExpression="pk = :pk", ScanIndexForward=False, Limit=limit,
                            ExpressionAttributeValues={":pk": {"S": "ACTIONS"}})
        return [ActionRow(**from_item(item, _ACTION)) for item in answer.get("Items", [])]

    def expire(self, now: float, success_ttl: float = SUCCESS_TTL, failure_ttl: float = FAILURE_TTL) -> int:
        # a finished row ended after it started: only rows started before now - the shorter TTL can be due
        below = f"{now - min(success_ttl, failure_ttl):017.6f}$"
        due = []
        for shard in range(SHARDS):
            for item in self._walk(shard, "0", below, JobFilter()):
                row = _attempt_row(item)
                keep = success_ttl if row.outcome == "succeeded" else failure_ttl
                if row.outcome is not None and row.ended is not None and row.ended < now - keep:
                    due.append({"DeleteRequest": {"Key": attempt_key(row.message_id, row.attempt)}})
        self._batch_write(due)
        return len(due)

    def close(self) -> None:
        self._client.close()
