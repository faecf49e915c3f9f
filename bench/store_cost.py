"""What the DynamoDB job store costs per task, in write request units, from rows really written (to moto).

    python bench/store_cost.py                 # a 10-minute task, default heartbeat; 127.0.0.1 only
    python bench/store_cost.py --task-minutes 60 --kwargs-bytes 4000 --traceback-bytes 16000

The recorder writes, per attempt: the row when it starts (PutItem), a heartbeat (UpdateItem) every
``--store-beat`` seconds while it runs, and the row again when it ends (PutItem, with the outcome and
a failure's traceback). DynamoDB bills a write by the item's size, in units of 1 KB rounded up (an
update by the larger of the item before and after), and each write that changes what an index holds
writes that index too: the listing index ``by_start`` when the row starts and ends (it carries the
attributes filters read, which no heartbeat changes), the sparse index ``running`` when the row starts
(enters it) and ends (leaves it). moto answers ``ReturnConsumedCapacity`` with a fixed figure, so the
sizes come from the item moto stored, counted as DynamoDB counts them (``item_size``). Worker rows
(one per worker process every 30 s) are per worker, not per task: shown apart.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqsmaster.ops.embedded import EmbeddedSQS  # noqa: E402
from sqsmaster.store import AttemptRow, WorkerRow, open_store  # noqa: E402
from sqsmaster.store.base import bounded_kwargs  # noqa: E402
from sqsmaster.store.dynamo_table import LISTED, item_size  # noqa: E402

#: On-demand price per million write request units, us-east-1, since AWS's November 2024 cut (check your region).
PRICE_PER_MILLION_WRU = 0.625
#: The worker's default heartbeat: sqs_timeout 30 s, a beat every sqs_timeout / 3.
DEFAULT_BEAT = 10.0
WORKER_BEAT = 30.0


def units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def stored(client: Any, table: str, message_id: str, sk: str) -> dict[str, Any]:
    return dict(client.get_item(TableName=table, Key={"pk": {"S": f"M#{message_id}"}, "sk": {"S": sk}})["Item"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Write a started row, a heartbeat and an ended row to a DynamoDB store on moto; return their sizes."""
    with EmbeddedSQS() as server:
        table = f"cost-{uuid.uuid4().hex[:8]}"
        store = open_store(f"dynamodb://{table}?endpoint={server.endpoint}&region=us-east-1")
        client = store._client  # noqa: SLF001 - the bench reads back what the store wrote, as the table holds it
        kwargs = {"dataset": "s3://bucket/" + "x" * max(args.kwargs_bytes - 40, 0), "seed": 7}
        now, message_id = 1_800_000_000.0, str(uuid.uuid4())
        row = AttemptRow(message_id, 1, "train_model", "https://sqs.us-east-1.amazonaws.com/123456789012/solver-jobs",
                         "ip-10-0-12-34.ec2.internal", 41234, now, kwargs=bounded_kwargs(kwargs), submitted=now - 5,
                         deadline=now + 4 * 3600, lease=30.0)
        store.put_attempt(row)
        start = stored(client, table, message_id, "attempt#0000000001")
        answer = client.update_item(TableName=table, ReturnConsumedCapacity="INDEXES",
                                    Key={"pk": {"S": f"M#{message_id}"}, "sk": {"S": "attempt#0000000001"}},
                                    UpdateExpression="SET heartbeats = :n, last_heartbeat = :at",
                                    ExpressionAttributeValues={":n": {"N": "59"}, ":at": {"N": repr(now + 590)}})
        beat = stored(client, table, message_id, "attempt#0000000001")
        traceback = ("Traceback (most recent call last):\n" + "  File \"solver.py\", line 1, in solve\n" *
                     max(args.traceback_bytes // 37, 1))[: args.traceback_bytes]
        row.heartbeats, row.last_heartbeat = 60, now + 600
        row.ended, row.runtime, row.outcome, row.action = now + 600, 600.0, args.outcome, "retry"
        row.peak_memory, row.exception = 812_000_000, "ValueError: solver diverged" if traceback else None
        row.traceback = traceback or None
        store.put_attempt(row)
        end = stored(client, table, message_id, "attempt#0000000001")
        store.put_worker(WorkerRow("ip-10-0-12-34.ec2.internal", 41234, now, now, "0.1.0", [row.queue], 4, 3))
        worker = dict(client.get_item(TableName=table, Key={"pk": {"S": "WORKERS"},
                                                            "sk": {"S": "ip-10-0-12-34.ec2.internal:41234"}})["Item"])
        client.delete_table(TableName=table)
        store.close()
    listed = set(LISTED) | {"pk", "sk", "shard", "when"}
    return {"start": item_size(start), "beat": item_size(beat), "end": item_size(end), "worker": item_size(worker),
            "listed_start": item_size({k: v for k, v in start.items() if k in listed}),
            "listed_end": item_size({k: v for k, v in end.items() if k in listed}),
            "running_keys": item_size({k: v for k, v in start.items() if k in ("pk", "sk", "running", "when")}),
            "moto_says": answer.get("ConsumedCapacity")}


def report(sizes: dict[str, Any], args: argparse.Namespace) -> None:
    seconds = args.task_minutes * 60
    print(f"item sizes (bytes, as DynamoDB counts them): started row {sizes['start']}, after a heartbeat "
          f"{sizes['beat']}, ended row {sizes['end']}; listing index entry {sizes['listed_start']} -> "
          f"{sizes['listed_end']}; running index entry {sizes['running_keys']}; worker row {sizes['worker']}")
    print(f"(moto's ReturnConsumedCapacity for the heartbeat: {sizes['moto_says']}: a fixed figure, not used)")
    fixed = (units(sizes["start"]) + units(sizes["listed_start"]) + units(sizes["running_keys"])  # start
             + units(max(sizes["beat"], sizes["end"])) + units(sizes["listed_end"]) + 1)  # end; leaving `running`
    print(f"\n{args.task_minutes:g}-minute task, outcome {args.outcome!r}: start + end = {fixed} WRU; each store "
          f"heartbeat = {units(sizes['beat'])} WRU (an update bills the item's whole size; no index changes)")
    print(f"{'store heartbeat every':>22}  {'heartbeats':>10}  {'WRU/task':>8}  {'$ per million tasks':>19}")
    for beat in args.store_beats:
        beats = int(seconds // beat)
        total = fixed + beats * units(sizes["beat"])
        print(f"{beat:>20g} s  {beats:>10}  {total:>8}  {total * PRICE_PER_MILLION_WRU:>19,.2f}")
    per_hour = 3600 / WORKER_BEAT * units(sizes["worker"])
    print(f"\nworker rows: {units(sizes['worker'])} WRU every {WORKER_BEAT:g} s per worker process = {per_hour:g} "
          f"WRU per worker-hour (${per_hour * 24 * 30 * PRICE_PER_MILLION_WRU / 1e6:.4f} per worker-month)")
    print(f"prices: on-demand ${PRICE_PER_MILLION_WRU} per million write request units (us-east-1); reads "
          "(the CLI, the dashboard) and storage come on top")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-minutes", type=float, default=10)
    parser.add_argument("--kwargs-bytes", type=int, default=200, help="size of the task's kwargs as JSON")
    parser.add_argument("--traceback-bytes", type=int, default=0, help="a failure's traceback (0: it succeeded)")
    parser.add_argument("--store-beats", type=float, nargs="+", default=[DEFAULT_BEAT, 15.0, 60.0],
                        help="seconds between the recorder's heartbeat writes to compare")
    args = parser.parse_args()
    args.outcome = "failed" if args.traceback_bytes else "succeeded"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    report(measure(args), args)


if __name__ == "__main__":
    main()
