"""``sqsmaster workers``: the worker processes the job store knows, and which have gone silent."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register(subparsers: Any) -> None:
    from ..ops.views import STORE_HELP, WORKER_STALE_AFTER

    parser = subparsers.add_parser(
        "workers", help="list worker processes from the job store",
        description="List the worker processes recorded in the job store, most recently seen first: busy slots, "
                    "queues, version; a worker not seen for --stale-after seconds is shown as stale. "
                    "Exit codes: 0 ok, 2 bad usage or no store given, 3 store missing or unreachable.")
    parser.add_argument("--stale-after", type=float, default=WORKER_STALE_AFTER, metavar="SECONDS",
                        help=f"flag workers not seen for this long (default {WORKER_STALE_AFTER:g})")
    parser.add_argument("--json", action="store_true", help="one JSON document: {now, workers}")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.views import open_for_reading, worker_view, workers_table

    now = time.time()
    store = open_for_reading(args.store)
    try:
        rows = store.workers()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"now": now, "workers": [worker_view(r, now, args.stale_after) for r in rows]}))
    else:
        print(workers_table(rows, now, args.stale_after) if rows else "no workers recorded")
    return 0
