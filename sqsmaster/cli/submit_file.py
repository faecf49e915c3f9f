"""``sqsmaster submit-file URL FILE``: send the tasks of a JSON-lines file (``-`` for stdin)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import IO, Any, Iterator

from ..errors import ConfigurationError, SubmitFailed
from ..producer import TaskCall
from . import exit_code

_OPTIONS = ("delay_seconds", "countdown", "group_id", "deduplication_id")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit-file", help="send the tasks of a JSON-lines file",
        description='Send one task per line: {"task": NAME, "kwargs": {...}}, optionally with "delay_seconds", '
                    '"countdown", "eta" (ISO 8601), "group_id", "deduplication_id". A malformed line stops the '
                    "run with its line number; the lines before it are sent, none after it. A queue that does not "
                    "exist is an error: create it first with sqsmaster create. Exit codes: 0 all sent, 1 some "
                    "could not be sent, 2 a malformed line or a file that cannot be read, 3 queue missing or "
                    "unreachable.")
    parser.add_argument("url", help="the queue URL")
    parser.add_argument("file", help="the JSON-lines file, or - for stdin")
    parser.add_argument("--sender-name", help="the service_name message attribute")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def read_tasks(stream: IO[str], name: str) -> Iterator[TaskCall]:
    """Parse lines lazily into Tasks; a malformed line raises ConfigurationError naming ``name:line``."""
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield parse_line(line, f"{name}:{number}")


def parse_line(line: str, where: str) -> TaskCall:
    try:
        content = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{where}: not JSON ({exc})") from None
    if not isinstance(content, dict) or not isinstance(content.get("task"), str):
        raise ConfigurationError(f'{where}: expected {{"task": NAME, "kwargs": {{...}}}}, got {line.strip()[:80]}')
    kwargs = content.get("kwargs", {})
    unknown = set(content) - {"task", "kwargs", "eta", *_OPTIONS}
    if not isinstance(kwargs, dict) or unknown:
        raise ConfigurationError(f"{where}: 'kwargs' must be an object; unknown keys: {sorted(unknown)}")
    options = {name: content[name] for name in _OPTIONS if name in content}
    try:
        if "eta" in content:
            options["eta"] = datetime.datetime.fromisoformat(content["eta"])
        return TaskCall(content["task"], kwargs, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _count_lines(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as stream:
            return sum(1 for line in stream if line.strip())
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    from ..manager import TaskManager

    progress = not args.no_progress
    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            print("sqsmaster: no progress bar (pip install 'sqsmaster[progress]')", file=sys.stderr)
            progress = False
    stdin = args.file == "-"
    total = None if stdin or not progress else _count_lines(args.file)
    try:
        stream = sys.stdin if stdin else open(args.file, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.file}: {exc}") from None
    with stream, TaskManager(args.url, sender_name=args.sender_name, create=False) as manager:
        manager.attributes()  # a queue that does not exist (or cannot be reached) shows before any line is read
        try:
            sent = manager.submit_many(read_tasks(stream, "stdin" if stdin else args.file), total=total,
                                       progress=progress)
        except SubmitFailed as exc:
            print(f"sqsmaster: error: {exc}", file=sys.stderr)
            return 1 if exc.cause is None else exit_code(exc.cause)
    print(f"sent {sent} task(s) to {args.url}")
    return 0
