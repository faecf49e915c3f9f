"""``sqsmaster schedule export --eventbridge``: the periodic tasks as EventBridge Scheduler definitions."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("schedule", help="export periodic tasks to a managed scheduler",
                                   description="Work with the schedules of periodic tasks.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    export = actions.add_parser(
        "export", help="print EventBridge Scheduler definitions",
        description="Print, as a JSON list, one EventBridge Scheduler CreateSchedule input per task of the --tasks "
                    "modules that has a schedule, sending the task's body to its queue (feed each to `aws "
                    "scheduler create-schedule --cli-input-json`). Run the workers with --no-scheduler then. "
                    "Exit codes: 0 ok, 2 usage (a schedule EventBridge cannot express, no queue).")
    export.add_argument("--eventbridge", action="store_true", help="EventBridge Scheduler definitions (the format)")
    export.add_argument("--tasks", action="append", metavar="MODULE", required=True,
                        help="module whose periodic tasks to export (repeatable)")
    export.add_argument("--queue", metavar="URL", help="the queue to send to (for schedules without queue=)")
    export.add_argument("--role-arn", metavar="ARN", help="the IAM role EventBridge sends with")
    export.add_argument("--prefix", default="sqsmaster-", help="prefix of the schedules' names (default sqsmaster-)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.schedules import as_json, eventbridge_definitions
    from ..worker.registry import load_tasks

    if args.action != "export":
        raise UsageError("sqsmaster schedule: error: give an action: export (see sqsmaster schedule --help)")
    if not args.eventbridge:
        raise UsageError("sqsmaster schedule export: error: give the format: --eventbridge")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    definitions, warnings = eventbridge_definitions(load_tasks(args.tasks), args.queue, args.role_arn, args.prefix)
    for warning in warnings:
        print(f"sqsmaster schedule export: warning: {warning}", file=sys.stderr)
    print(as_json(definitions))
    return EXIT_OK
