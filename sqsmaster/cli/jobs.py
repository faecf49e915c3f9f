"""``sqsmaster jobs``: attempts in the job store, newest first, filtered; a table or ``--json``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register(subparsers: Any) -> None:
    from ..ops.views import STORE_HELP

    parser = subparsers.add_parser(
        "jobs", help="list attempts from the job store (running, stale, failed...)",
        description="List attempts recorded in the job store, newest first. Running rows show how long they have "
                    "run, the time left to their hard timeout and their last heartbeat; a running row with no "
                    "heartbeat for longer than its lease (its worker died) is shown as stale, not running. "
                    "Exit codes: 0 ok, 2 bad usage or no store given, 3 store missing or unreachable.")
    status = parser.add_mutually_exclusive_group()
    status.add_argument("--running", dest="status", action="store_const", const="running", help="running attempts")
    status.add_argument("--failed", dest="status", action="store_const", const="failed",
                        help="attempts that ended other than succeeded or cancelled")
    status.add_argument("--stale", dest="status", action="store_const", const="stale",
                        help="running attempts whose worker has not been heard of within the lease")
    status.add_argument("--status", dest="status", metavar="S", help="attempts with outcome S (e.g. 'timed out')")
    parser.add_argument("--task", metavar="NAME", help="only this task")
    parser.add_argument("--queue", metavar="URL", help="only this queue")
    parser.add_argument("--since", metavar="WHEN", help="started since: 30m, 1h, 2d, or an ISO 8601 time (UTC)")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (default 50)")
    parser.add_argument("--cursor", metavar="C", help="the next page: the cursor a previous page gave")
    parser.add_argument("--json", action="store_true", help="one JSON document: {now, jobs, cursor}")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigurationError
    from ..ops.views import job_view, jobs_table, open_for_reading, parse_since
    from ..store import JobFilter

    if args.limit < 1:
        raise ConfigurationError(f"--limit must be at least 1, not {args.limit}")
    now = time.time()
    where = JobFilter(status=args.status, task=args.task, queue=args.queue,
                      since=parse_since(args.since, now) if args.since else None)
    store = open_for_reading(args.store)
    try:
        page = store.attempts(where, now, limit=args.limit, cursor=args.cursor)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"now": now, "jobs": [job_view(row, now) for row in page.rows], "cursor": page.cursor}))
        return 0
    print(jobs_table(page.rows, now) if page.rows else "no attempts match")
    if page.cursor:
        print(f"(more: --cursor {page.cursor})")
    return 0
