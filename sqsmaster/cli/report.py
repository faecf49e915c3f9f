"""``sqsmaster report JOBLOG``: summarise a job log; optionally export it to CSV and draw its timeline."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import EXIT_FAILURE, EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="summarise a job log, export CSV, draw a timeline",
                                   description="Print a summary of a JSON-lines job log (one line per attempt): "
                                               "attempts and outcomes per task, runtimes, peak memory.")
    parser.add_argument("job_log", metavar="JOBLOG", help="the job log (JSON lines) a worker wrote")
    parser.add_argument("--csv", metavar="OUT", help="also write every record to this CSV file")
    parser.add_argument("--timeline", metavar="OUT.png",
                        help="also draw a Gantt timeline (needs matplotlib: pip install 'sqsmaster[plot]')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.report import draw_timeline, format_summary, write_csv
    from ..worker.jobs import JobLog

    try:
        records = JobLog(args.job_log).records()
    except OSError as exc:
        print(f"sqsmaster: error: cannot read the job log: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(format_summary(records))
    if args.csv:
        write_csv(records, args.csv)
        print(f"wrote {len(records)} records to {args.csv}")
    if args.timeline:
        draw_timeline(records, args.timeline)
        print(f"drew the timeline to {args.timeline}")
    return EXIT_OK
