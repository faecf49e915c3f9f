"""``sqsmaster cancel MESSAGE_ID``: the worker that receives a queued message deletes it unrun."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..ops.control import cancel, running_attempt
from .kill import add_store_option, opened_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cancel", help="delete a queued message unrun when a worker receives it (needs a job store)",
        description="Mark MESSAGE_ID cancelled: the worker that receives it deletes it without running it "
                    "(outcome 'cancelled'). Workers must run with the same --store. A running task is not "
                    "stopped: use sqsmaster kill.")
    parser.add_argument("message_id", metavar="MESSAGE_ID")
    add_store_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = opened_store(args)
    try:
        flag = cancel(store, args.message_id)
        running = running_attempt(store, args.message_id)
    finally:
        store.close()
    print(f"cancel ordered: message {flag.message_id} by {flag.who}; the worker that receives it deletes it unrun")
    if running is not None:
        print(f"warning: message {flag.message_id} is running now (attempt {running.attempt} on {running.worker}); "
              "a cancel does not stop it: sqsmaster kill does", file=sys.stderr)
    return 0
