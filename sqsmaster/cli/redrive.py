"""``sqsmaster redrive``: move messages from a dead-letter queue back to a queue."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "redrive", help="move messages from a dead-letter queue back to a queue",
        description="Move every visible message of DLQ_URL to --to: each is sent there first, then deleted from "
                    "the DLQ, so a crash midway duplicates at worst and never loses. Exit codes: 0 done, "
                    "3 a queue missing or unreachable.")
    parser.add_argument("dlq_url", metavar="DLQ_URL")
    parser.add_argument("--to", required=True, metavar="URL", help="the queue to move the messages to")
    parser.add_argument("-n", type=int, default=None, metavar="N", help="move at most N messages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..admin import redrive_queue

    moved = redrive_queue(args.dlq_url, args.to, args.n)
    print(f"moved {moved} message(s) from {args.dlq_url} to {args.to}")
    return 0
