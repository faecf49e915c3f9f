"""``sqsmaster schedules``: the periodic tasks of a tasks module, with the slot each fired last and fires next."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from . import EXIT_OK, EXIT_QUEUE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedules", help="list periodic tasks, their last and next slot",
        description="List the tasks of the --tasks modules that have a schedule, with the latest slot the workers "
                    "sent (read from the job store) and the next one. Exit codes: 0 ok, 2 usage, 3 job store "
                    "missing or unreachable.")
    parser.add_argument("--tasks", action="append", metavar="MODULE", required=True,
                        help="module whose tasks to list, as the worker takes it (repeatable)")
    parser.add_argument("--store", metavar="URL", help="job store (default: $SQSMASTER_STORE); without one, the "
                                                       "last slot is not known")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.schedules import schedule_rows
    from ..store import StoreError, open_store, store_url_from_env
    from ..worker.registry import load_tasks
    from ..worker.schedules import slot_iso

    if os.getcwd() not in sys.path:  # --tasks names a module of the project, as for the worker
        sys.path.insert(0, os.getcwd())
    registry = load_tasks(args.tasks)
    url = store_url_from_env(args.store)
    try:
        store = open_store(url, create=False) if url else None
        rows = schedule_rows(registry, store, time.time())
    except StoreError as exc:
        print(f"sqsmaster schedules: error: {exc}", file=sys.stderr)
        return EXIT_QUEUE
    if not rows:
        print(f"no task of {', '.join(args.tasks)} has a schedule")
        return EXIT_OK
    table = [("TASK", "SCHEDULE", "CATCH-UP", "LAST SENT", "NEXT")]
    for row in rows:
        last = "unknown (no --store)" if store is None else "never" if row.last is None else \
            f"{slot_iso(row.last.slot)} by {row.last.owner}"
        table.append((row.task, row.schedule, row.catch_up, last, slot_iso(row.next)))
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[4])
    return EXIT_OK
