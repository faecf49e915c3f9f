"""``sqsmaster peek``: look at message bodies without deleting them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .worker import _at_least


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "peek", help="print message bodies without deleting them",
        description="Print up to N visible messages and hand them back at once. SQS has no true peek: each look "
                    "is a receive that raises the message's receive count and can push it into the dead-letter "
                    "queue, so on a queue with a redrive policy this refuses unless --force. Exit codes: 0 ok, "
                    "2 refused, 3 queue missing or unreachable.")
    parser.add_argument("url", metavar="QUEUE_URL")
    parser.add_argument("-n", type=_at_least(1, integer=True), default=10, metavar="N",
                        help="how many messages (default 10)")
    parser.add_argument("--force", action="store_true", help="peek even though the queue has a redrive policy")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.admin import peek

    messages = peek(args.url, args.n, force=args.force)
    print(f"note: peeking raised the receive count of {len(messages)} message(s)", file=sys.stderr)
    for message in messages:
        print(f"{message.message_id} (receive count {message.receive_count}): {message.body}")
    return 0
