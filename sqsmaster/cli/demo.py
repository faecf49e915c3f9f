"""``sqsmaster demo``: the main job end to end, on the embedded default queue (or an embedded SQS server)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a short demo on a local queue: a worker, a job log and a timeline",
        description="Make a sqlite:// queue in a temporary directory (no server), submit quick tasks, a task "
                    "longer than its visibility timeout, a task stuck in C code past its hard timeout and a "
                    "failing task, run a worker with concurrency 2 until the queue is empty, print what became "
                    "of each, and write the job log, the worker's log and a timeline picture (needs matplotlib). "
                    "Exit codes: 0 every task ended as expected, 1 otherwise, 2 moto missing for --sqs.")
    parser.add_argument("--sqs", action="store_true",
                        help="use an embedded moto SQS server on 127.0.0.1 instead (pip install 'sqsmaster[demo]')")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write jobs.log, worker.log and timeline.png to DIR and keep them (default: a temporary "
                             "directory, removed at the end unless a task did not end as expected)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.demo import run_demo

    return run_demo(sqs=args.sqs, out_dir=args.out)
