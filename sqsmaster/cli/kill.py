"""``sqsmaster kill MESSAGE_ID``: stop a running task at its next heartbeat tick, wherever it runs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..ops.control import kill, running_attempt
from ..store import THEN_CHOICES, JobStore, open_store, store_url_from_env
from . import UsageError

#: What each ``--then`` does with the message, for the command's output.
THEN_WORDS = {"release": "released (visible again at once)",
              "dead-letter": "sent to the dead-letter queue (--dlq, else the queue's redrive target)",
              "delete": "deleted"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kill", help="stop a running task at its next heartbeat tick (needs a job store)",
        description="Order the task running MESSAGE_ID stopped at its next heartbeat tick, in either isolation "
                    "mode, as a hard timeout stops it (outcome 'killed'); then its message is released, "
                    "dead-lettered or deleted. Workers must run with the same --store.")
    parser.add_argument("message_id", metavar="MESSAGE_ID")
    parser.add_argument("--then", choices=THEN_CHOICES, default="dead-letter",
                        help="what becomes of the message after the kill (default dead-letter)")
    add_store_option(parser)
    parser.set_defaults(func=run)


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", help="the job store (default $SQSMASTER_STORE)")


def opened_store(args: argparse.Namespace) -> JobStore:
    """The job store of ``--store`` or ``$SQSMASTER_STORE``, which must exist (else StoreError: exit 3)."""
    url = store_url_from_env(args.store)
    if not url:
        raise UsageError(f"sqsmaster {args.command}: error: no job store: give --store URL or set SQSMASTER_STORE")
    return open_store(url, create=False)


def run(args: argparse.Namespace) -> int:
    store = opened_store(args)
    try:
        now = time.time()
        flag = kill(store, args.message_id, args.then, now=now)
        running = running_attempt(store, args.message_id, now)
    finally:
        store.close()
    print(f"kill ordered: message {flag.message_id} by {flag.who}; the worker running it stops it at its next "
          f"heartbeat tick, then it is {THEN_WORDS[flag.then]}")
    if running is None:
        print(f"warning: the job store shows no running attempt of message {flag.message_id}: the order waits "
              "for its next attempt (a worker without --store never sees it)", file=sys.stderr)
    else:
        print(f"running: attempt {running.attempt} of task {running.task} on {running.worker}")
    return 0
