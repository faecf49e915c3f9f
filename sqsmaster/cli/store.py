"""``sqsmaster store create URL``: make a job store (a DynamoDB table with its indexes and TTL, a SQLite file)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "store", help="manage the job store (create)",
        description="Manage the job store. Exit codes: 0 ok, 2 bad usage, 3 store unreachable.")
    actions = parser.add_subparsers(dest="store_action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="create the job store's table or file and print what was made",
        description="Create the job store: for dynamodb://TABLE the table (on-demand capacity, keys pk/sk, the "
                    "indexes by_start and running) with TTL on expires_at; for sqlite:///PATH the file. "
                    "Idempotent: what exists is left as it is. Needs dynamodb:CreateTable, DescribeTable, "
                    "UpdateTimeToLive and DescribeTimeToLive.")
    create.add_argument("url", metavar="URL")
    create.set_defaults(func=run_create)


def run_create(args: argparse.Namespace) -> int:
    from ..store import open_store
    from ..store.dynamodb import DynamoStore

    store = open_store(args.url, create=True)
    try:
        # opened on an existing table, create() checks the table's TTL and says what it found
        lines = (store.made or store.create()) if isinstance(store, DynamoStore) else [f"job store {args.url} ready"]
    finally:
        store.close()
    for line in lines:
        print(line)
    return 0
