"""``sqsmaster purge``: delete every message in a queue."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "purge", help="delete every message in a queue",
        description="Delete every message in the queue (SQS allows one purge per queue every 60 seconds). "
                    "Exit codes: 0 purged, 3 queue missing or unreachable.")
    parser.add_argument("url", metavar="QUEUE_URL")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.admin import purge

    purge(args.url)
    print(f"purged {args.url}")
    return 0
