"""``sqsmaster create``: create a queue (and its dead-letter queue), as SQS's CreateQueue does."""

from __future__ import annotations

import argparse
from typing import Any

from ..limits import MAX_VISIBILITY_TIMEOUT
from .worker import _at_least


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "create", help="create a queue (and a dead-letter queue)",
        description="Create the queue QUEUE_URL names; nothing happens if it exists with the same attributes. "
                    "SQS (http(s)://): the name at the end of the URL, on its endpoint (a local moto server "
                    "needs no credentials); --max-receive-count N also makes NAME-dlq and a redrive policy. "
                    "sqlite:///PATH?queue=NAME and fq:///DIR: with the options in the URL "
                    "(?visibility_timeout=60&max_receive_count=3 also makes NAME-dlq / DIR-dlq). Only this "
                    "command and a producer's first send create a queue: consumers and the other commands refuse "
                    "one that does not exist. Exit codes: 0 created or there already, 1 SQS refused (another queue "
                    "of that name with other attributes), 2 bad options, 3 endpoint unreachable.")
    parser.add_argument("url", metavar="QUEUE_URL")
    parser.add_argument("--visibility-timeout", type=_at_least(0, integer=True, high=MAX_VISIBILITY_TIMEOUT),
                        metavar="S", help="SQS: the queue's default visibility timeout")
    parser.add_argument("--max-receive-count", type=_at_least(1, integer=True, high=1000), metavar="N",
                        help="SQS: make NAME-dlq and move a message there after N receives")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.admin import create_queue

    created = create_queue(args.url, visibility_timeout=args.visibility_timeout,
                           max_receive_count=args.max_receive_count)
    print(created.url)
    if created.dead_letter_url:
        print(f"dead-letter queue {created.dead_letter_url}")
    if not created.new:
        print("(it existed already)")
    return 0
