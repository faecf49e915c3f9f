"""``sqsmaster job MESSAGE_ID``: every attempt at one message, with its traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    from ..ops.views import STORE_HELP

    parser = subparsers.add_parser(
        "job", help="show every attempt at one message, with tracebacks",
        description="Show every attempt the job store recorded at one message, oldest first, each with its "
                    "outcome, worker, times and traceback. Exit codes: 0 ok, 1 no attempt of that message "
                    "recorded, 2 bad usage or no store given, 3 store missing or unreachable.")
    parser.add_argument("message_id", metavar="MESSAGE_ID")
    parser.add_argument("--json", action="store_true", help="one JSON document: {now, message_id, attempts}")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.views import job_text, job_view, open_for_reading

    now = time.time()
    store = open_for_reading(args.store)
    try:
        rows = store.attempts_of(args.message_id)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"now": now, "message_id": args.message_id, "attempts": [job_view(r, now) for r in rows]}))
    elif rows:
        print(job_text(rows, now))
    if not rows:
        print(f"sqsmaster: error: no attempt of message {args.message_id} in the job store", file=sys.stderr)
        return 1
    return 0
