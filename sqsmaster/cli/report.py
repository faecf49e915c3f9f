"""``sqsmaster report JOBLOG``: summarise a job log; optionally export it to CSV and draw its timeline."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigurationError
from . import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="summarise a job log, export CSV, draw a timeline",
                                   description="Print a summary of a JSON-lines job log (one line per attempt): "
                                               "attempts and outcomes per task, runtimes, peak memory. Exit codes: "
                                               "0 ok, 2 the log cannot be read or holds no job record, an output "
                                               "cannot be written, or matplotlib is missing for --timeline.")
    parser.add_argument("job_log", metavar="JOBLOG", help="the job log (JSON lines) a worker wrote")
    parser.add_argument("--csv", metavar="OUT", help="also write every record to this CSV file")
    parser.add_argument("--timeline", metavar="OUT.png",
                        help="also draw a Gantt timeline (needs matplotlib: pip install 'sqsmaster[plot]')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.report import draw_timeline, format_summary, write_csv
    from ..worker.jobs import JobLog

    skipped: list[tuple[int, str]] = []
    try:
        records = list(JobLog(args.job_log).read(skipped))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the job log {args.job_log}: {exc.strerror or exc}") from None
    if skipped:
        number, reason = skipped[0]
        if not records:
            raise ConfigurationError(f"{args.job_log} is not a job log: none of its lines is a job record "
                                     f"(line {number}: {reason[:100]})")
        print(f"sqsmaster: note: skipped {len(skipped)} line(s) of {args.job_log} that are not job records "
              f"(line {number}: {reason[:100]})", file=sys.stderr)
    print(format_summary(records))
    for path, write, what in ((args.csv, write_csv, "wrote {n} records to {path}"),
                              (args.timeline, draw_timeline, "drew the timeline to {path}")):
        if not path:
            continue
        try:
            write(records, path)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(what.format(n=len(records), path=path))
    return EXIT_OK
