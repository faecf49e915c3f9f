"""``sqsmaster status``: a queue's depth, its redrive policy and its dead-letter queue's depth."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="show a queue's depth and its dead-letter queue",
        description="Show the (approximate) visible, in-flight and delayed message counts, the redrive policy and "
                    "the dead-letter queue's depth. Exit codes: 0 ok, 3 queue missing or unreachable.")
    parser.add_argument("url", metavar="QUEUE_URL")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.admin import queue_status

    status = queue_status(args.url)
    print(f"queue      {status.url}")
    print(f"visible    {status.visible}")
    print(f"in flight  {status.in_flight}")
    print(f"delayed    {status.delayed}")
    if status.redrive_policy:
        print(f"redrive    after {status.redrive_policy.get('maxReceiveCount')} receives to "
              f"{status.redrive_policy.get('deadLetterTargetArn')}")
        print(f"dlq        {status.dead_letter_url} ({status.dead_letter_visible} visible)")
    else:
        print("redrive    none (a message past its last retry stays here unless the worker has --dlq)")
    return 0
