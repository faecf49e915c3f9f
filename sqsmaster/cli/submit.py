"""``sqsmaster submit``: send one task."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigurationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit", help="send one task to a queue",
        description="Send TASK with keyword arguments. key=value values are read as JSON when they parse "
                    "(seconds=2 is the int 2, ok=true a bool) and as strings otherwise; --json gives them all at "
                    "once. Prints the message id. A queue that does not exist is an error (a mistyped path must "
                    "not start a new queue): create it first with sqsmaster create. Exit codes: 0 sent, "
                    "2 bad arguments, 3 queue missing or unreachable.")
    parser.add_argument("url", metavar="QUEUE_URL")
    parser.add_argument("task", metavar="TASK", help="the registered task name")
    parser.add_argument("kwargs", nargs="*", metavar="key=value", help="keyword arguments")
    parser.add_argument("--json", dest="json_kwargs", default=None, metavar="'{...}'",
                        help="keyword arguments as a JSON object (key=value pairs override it)")
    parser.set_defaults(func=run)


def parse_kwargs(pairs: list[str], json_kwargs: str | None) -> dict[str, Any]:
    """``--json`` then each ``key=value`` (the value as JSON if it parses, else the string; a key=value
    overrides --json, a key given twice as key=value is a ConfigurationError)."""
    kwargs: dict[str, Any] = {}
    seen: set[str] = set()
    if json_kwargs:
        try:
            loaded = json.loads(json_kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigurationError("--json must be a JSON object")
        kwargs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"expected key=value, got {pair!r}")
        if key in seen:  # the last would silently win, as with --tasks given twice
            raise ConfigurationError(f"{pair}: key {key!r} given twice")
        seen.add(key)
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def run(args: argparse.Namespace) -> int:
    from ..manager import TaskManager

    kwargs = parse_kwargs(args.kwargs, args.json_kwargs)
    with TaskManager(args.url, sender_name="sqsmaster-cli", create=False) as manager:
        print(manager.submit(args.task, **kwargs)["MessageId"])
    return 0
