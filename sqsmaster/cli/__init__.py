"""The ``sqsmaster`` command: a thin layer over the library.

Each command lives in a module of this package with ``register(subparsers)``;
its handler returns the exit code. Exit codes: 0 success, 1 failure of the
work itself, 2 bad usage or configuration, 3 the queue could not be reached or
does not exist; ``sqsmaster worker`` adds 4 (a worker process of a pool died)
and 5 (a shutdown could not make every delete or release in time): see
:data:`sqsmaster.loop.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .. import __version__
from ..errors import ConfigurationError, QueueError, SqsMasterError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_QUEUE = 3

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ["demo", "worker", "submit", "submit_file", "status", "peek", "purge", "redrive", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqsmaster", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"sqsmaster {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = __import__(f"{__name__}.{name}", fromlist=["register"])
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"sqsmaster: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QueueError as exc:
        print(f"sqsmaster: error: {exc}", file=sys.stderr)
        return EXIT_QUEUE
    except SqsMasterError as exc:
        print(f"sqsmaster: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
