"""The ``sqsmaster`` command: a thin layer over the library.

Each command lives in a module of this package with ``register(subparsers)``;
its handler returns the exit code. Every error is one line on stderr. Exit codes:
0 success; 1 the work itself failed (SQS refused a request it understood, such as a
second purge within 60 s, or some messages could not be moved); 2 bad usage or
configuration (a bad option, a tasks module that does not import, no AWS credentials,
credentials SQS refuses); 3 a queue or the job store does not exist or cannot be reached. ``sqsmaster
worker`` adds 4 (a worker process of a pool died) and 5 (a shutdown could not make every
delete or release in time): see :data:`sqsmaster.worker.loop.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn, Sequence

from .. import __version__
from ..errors import ConfigurationError, QueueDoesNotExist, QueueError, SqsMasterError
from ..store import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_QUEUE = 3

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ["demo", "worker", "submit", "submit_file", "create", "status", "peek", "purge", "redrive", "report",
            "scale", "kill", "cancel", "schedules", "schedule", "dashboard", "jobs", "job", "workers", "store"]

#: SQS error codes that mean the credentials, their permissions or the clock are wrong: configuration (exit 2),
#: not a queue that cannot be reached.
ACCESS_ERROR_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "AuthFailure", "ExpiredToken", "IncompleteSignature",
    "InvalidAccessKeyId", "InvalidClientTokenId", "InvalidSecurity", "MissingAuthenticationToken", "RequestExpired",
    "SignatureDoesNotMatch", "UnrecognizedClientException",
})

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


class UsageError(Exception):
    """A command line that cannot work: printed as one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with each error as one line naming the problem (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sqsmaster", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"sqsmaster {__version__}")
    _add_logging_options(parser, "")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = __import__(f"{__name__}.{name}", fromlist=["register"])
        module.register(subparsers)
    for command in subparsers.choices.values():  # -v / --log-level after the command too, as celery and rq take them
        _add_logging_options(command, "command_")
    return parser


def _add_logging_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count",
                        default=0 if not prefix else argparse.SUPPRESS, help="more log output (-vv for debug)")
    parser.add_argument("--log-level", dest=f"{prefix}log_level", type=str.upper, choices=LOG_LEVELS,
                        default=None if not prefix else argparse.SUPPRESS, metavar="LEVEL",
                        help=f"log level: {', '.join(LOG_LEVELS)} (overrides -v)")


def log_level(args: argparse.Namespace, default: int = logging.WARNING) -> int:
    """The level the command line asks for: ``--log-level``, else ``default`` lowered by each ``-v``."""
    named = getattr(args, "command_log_level", None) or args.log_level
    if named:
        return int(getattr(logging, named))
    steps = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]
    verbose = args.verbose + getattr(args, "command_verbose", 0)
    return steps[max(steps.index(default) - verbose, 0)] if default in steps else default


def exit_code(error: BaseException) -> int:
    """The exit code for an error a command raised (see the module's docstring)."""
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    if isinstance(error, (QueueDoesNotExist, StoreError)):  # a job store missing or unreachable too
        return EXIT_QUEUE
    if isinstance(error, QueueError):
        if error.code in ACCESS_ERROR_CODES:
            return EXIT_USAGE
        return EXIT_QUEUE if error.code is None else EXIT_FAILURE  # no answer at all: the queue cannot be reached
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        logging.basicConfig(level=log_level(args), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SqsMasterError as exc:
        print(f"sqsmaster: error: {_one_line(exc)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def _one_line(error: Any) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
