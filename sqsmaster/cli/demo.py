"""``sqsmaster demo``: the main job end to end, on an embedded server."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run a short demo on an embedded SQS-compatible server",
                                   description="Start an embedded moto SQS server on 127.0.0.1, submit tasks that "
                                               "outlive their visibility timeout, hang, and fail, run them, and "
                                               "print what happened to each.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo()
