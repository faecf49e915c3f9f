"""``sqsmaster redrive``: move messages from a dead-letter queue back to a queue."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import EXIT_FAILURE, EXIT_OK
from .worker import _at_least


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "redrive", help="move messages from a dead-letter queue back to a queue",
        description="Move every message of DLQ_URL to --to: each is sent there first, then deleted from the DLQ, "
                    "so a crash midway duplicates at worst and never loses. Receives are long polls, and it "
                    "stops only when one comes back empty and the DLQ reports no visible message. Exit codes: "
                    "0 every message moved, 1 some could not be sent (they stay in the DLQ), 2 the destination "
                    "is the DLQ itself, 3 a queue missing or unreachable.")
    parser.add_argument("dlq_url", metavar="DLQ_URL")
    parser.add_argument("--to", required=True, metavar="URL", help="the queue to move the messages to")
    parser.add_argument("-n", type=_at_least(1, integer=True), default=None, metavar="N",
                        help="move at most N messages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.admin import redrive_queue

    result = redrive_queue(args.dlq_url, args.to, args.n)
    print(f"moved {result.moved} message(s) from {args.dlq_url} to {args.to}")
    if result.left:
        print(f"sqsmaster: note: {result.left} message(s) stayed in {args.dlq_url} (in flight elsewhere, delayed, "
              "or not sent: see above)", file=sys.stderr)
    return EXIT_FAILURE if result.failed else EXIT_OK
