"""``sqsmaster worker``: run registered tasks from one or more queues.

Every option can also come from an ``SQSMASTER_*`` environment variable
(:data:`ENVIRONMENT`; a flag on the command line wins), and every value is checked
here, so a bad one is reported in the words of the command line.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import textwrap
from typing import Any, Callable

from ..backends import is_process_local
from ..limits import MAX_RECEIVE_MESSAGES, MAX_VISIBILITY_TIMEOUT, MAX_WAIT_TIME
from ..store.base import FAILURE_TTL, SUCCESS_TTL
from ..supervise import DEFAULT_HARD_TIMEOUT, isolation_modes
from . import UsageError, log_level


def _number(text: str, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'a whole number' if integer else 'a number'}, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _at_least(low: float, *, integer: bool = False, above: bool = False,
              high: float | None = None) -> Callable[[str], float]:
    """A type for argparse: a number (``integer``: a whole one) >= ``low`` (``above``: > ``low``), <= ``high``."""
    def parse(text: str) -> float:
        value = _number(text, integer=integer)
        if value < low or (above and value == low) or (high is not None and value > high):
            bound = f"> {low:g}" if above else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}" + (f" and <= {high:g}" if high is not None else "")
                                             + f", not {text!r}")
        return value
    return parse


def _isolation(text: str) -> str:
    if text not in isolation_modes():
        raise argparse.ArgumentTypeError(f"unknown isolation {text!r}; choose one of {', '.join(isolation_modes())}")
    return text


def _flag(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be 1/true/yes or 0/false/no, not {text!r}")


#: Units a duration may end with (``--store-keep-failed 7d``).
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``; more than 0."""
    number, unit = (text[:-1], text[-1]) if text[-1:].lower() in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit.lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a duration such as 3600, 90m, 12h or 7d, not {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration > 0, not {text!r}")
    return seconds


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


#: ``(option, attribute, environment variable, parse)``: the worker's settings a deployment may give in its
#: environment (12-factor). A flag on the command line wins; ``--queue`` and ``--tasks`` take comma-separated
#: lists from the environment.
ENVIRONMENT: list[tuple[str, str, str, Callable[[str], Any]]] = [
    ("QUEUE_URL", "url", "SQSMASTER_QUEUE_URL", str),
    ("--tasks", "tasks", "SQSMASTER_TASKS", _names),
    ("--queue", "queue", "SQSMASTER_QUEUES", _names),
    ("--concurrency", "concurrency", "SQSMASTER_CONCURRENCY", _at_least(1, integer=True)),
    ("--isolation", "isolation", "SQSMASTER_ISOLATION", _isolation),
    ("--sqs-timeout", "sqs_timeout", "SQSMASTER_SQS_TIMEOUT", _at_least(1, above=True, high=MAX_VISIBILITY_TIMEOUT)),
    ("--alarm-timeout", "alarm_timeout", "SQSMASTER_ALARM_TIMEOUT", _at_least(0, above=True)),
    ("--hard-timeout", "hard_timeout", "SQSMASTER_HARD_TIMEOUT", _at_least(0, above=True)),
    ("--grace", "grace", "SQSMASTER_GRACE", _at_least(0)),
    ("--wait-time", "wait_time", "SQSMASTER_WAIT_TIME", _at_least(0, high=MAX_WAIT_TIME)),
    ("--max-tasks", "max_tasks", "SQSMASTER_MAX_TASKS", _at_least(1, integer=True)),
    ("--prefetch", "prefetch", "SQSMASTER_PREFETCH", _at_least(0, integer=True, high=MAX_RECEIVE_MESSAGES - 1)),
    ("--until-empty", "until_empty", "SQSMASTER_UNTIL_EMPTY", _flag),
    ("--dlq", "dlq", "SQSMASTER_DLQ", str),
    ("--log-format", "log_format", "SQSMASTER_LOG_FORMAT", str),
    ("--job-log", "job_log", "SQSMASTER_JOB_LOG", str),
    ("--store", "store", "SQSMASTER_STORE", str),
    ("--store-keep-succeeded", "store_keep_succeeded", "SQSMASTER_STORE_KEEP_SUCCEEDED", _duration),
    ("--store-keep-failed", "store_keep_failed", "SQSMASTER_STORE_KEEP_FAILED", _duration),
    ("--metrics", "metrics", "SQSMASTER_METRICS", str),
    ("--no-scheduler", "no_scheduler", "SQSMASTER_NO_SCHEDULER", _flag),
    ("--log-level", "log_level", "SQSMASTER_LOG_LEVEL", str.upper),
]

#: What an option is when neither the command line nor the environment gives it.
DEFAULTS: dict[str, Any] = {"tasks": [], "queue": [], "concurrency": 1, "isolation": "signal", "sqs_timeout": 30.0,
                            "hard_timeout": float(DEFAULT_HARD_TIMEOUT), "grace": 30.0, "wait_time": 20.0,
                            "prefetch": 0, "until_empty": False, "log_format": "text",
                            "store_keep_succeeded": SUCCESS_TTL, "store_keep_failed": FAILURE_TTL,
                            "no_scheduler": False}


def _epilog() -> str:
    from ..worker.loop import EXIT_CODES
    from ..worker.shutdown import POOL_KILL_MARGIN, SHUTDOWN_MARGIN

    codes = "\n".join(textwrap.fill(meaning, 78, initial_indent=f"  {code}  ", subsequent_indent="     ")
                      for code, meaning in sorted(EXIT_CODES.items()))
    shutdown = textwrap.fill(
        f"shutdown: after SIGTERM the worker exits within --grace + {SHUTDOWN_MARGIN:.0f} s whatever the endpoint "
        f"does (a pool within --grace + {POOL_KILL_MARGIN:.0f} s); give the platform a kill timeout of at least "
        f"--grace + {POOL_KILL_MARGIN + 5:.0f} s (ECS stopTimeout, Kubernetes terminationGracePeriodSeconds, "
        "systemd TimeoutStopSec).", 80)
    environment = "environment (a flag wins):\n" + "\n".join(
        f"  {variable:<25} {option}" for option, _, variable, _ in ENVIRONMENT)
    return f"exit codes:\n{codes}\n\n{shutdown}\n\n{environment}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker", help="run registered tasks from a queue", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Receive messages from QUEUE_URL (then from each --queue, in priority order), run the task each names "
            "from the --tasks modules under a heartbeat and hard timeout, retry failures per the task's policy and "
            "dead-letter what cannot run. SIGTERM/SIGINT: stop receiving, release unstarted messages, let a "
            "running task finish within --grace; a second signal releases everything now. Every option may come "
            "from an SQSMASTER_* environment variable (listed below).", 80),
        epilog=_epilog())
    # No defaults here (None): an option not given falls back to the environment, then to DEFAULTS.
    parser.add_argument("url", metavar="QUEUE_URL", nargs="?", help="the queue to work on (highest priority)")
    parser.add_argument("--tasks", action="append", metavar="MODULE",
                        help="module whose @sqsmaster.task functions/handlers to run (pkg.mod or pkg.mod:registry); "
                             "repeat it for tasks from several modules")
    parser.add_argument("--queue", action="append", metavar="URL",
                        help="another queue, taken only when the ones before it are empty (repeatable)")
    option = {name: parse for name, _, _, parse in ENVIRONMENT}
    parser.add_argument("--concurrency", type=option["--concurrency"], metavar="N",
                        help="tasks at once, one process each (default 1)")
    parser.add_argument("--isolation", type=option["--isolation"], metavar="signal|process",
                        help="default isolation for tasks that set none (default: signal)")
    parser.add_argument("--sqs-timeout", type=option["--sqs-timeout"], metavar="S",
                        help="visibility held while a task runs (default 30)")
    parser.add_argument("--alarm-timeout", type=option["--alarm-timeout"], metavar="S",
                        help="heartbeat period (default: sqs-timeout / 3)")
    parser.add_argument("--hard-timeout", type=option["--hard-timeout"], metavar="S",
                        help="default hard timeout of a task (default 4 hours)")
    parser.add_argument("--grace", type=option["--grace"], metavar="S",
                        help="seconds a running task may finish after SIGTERM/SIGINT (default 30)")
    parser.add_argument("--wait-time", type=option["--wait-time"], metavar="S",
                        help="longest receive wait (≤ 20, default 20): an idle worker long-polls one queue at a "
                             "time for this long")
    parser.add_argument("--max-tasks", type=option["--max-tasks"], metavar="N",
                        help="exit after N tasks ended, whatever their outcome")
    parser.add_argument("--prefetch", type=option["--prefetch"], metavar="N",
                        help="messages held beyond the running task, heartbeated until they start (default 0)")
    parser.add_argument("--until-empty", action="store_const", const=True,
                        help="exit once every queue is empty and no task of this worker runs")
    parser.add_argument("--dlq", metavar="URL",
                        help="dead-letter queue for queues without a redrive policy (send there, then delete)")
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON (default text)")
    parser.add_argument("--job-log", metavar="PATH",
                        help="append one JSON line per attempt (sqsmaster report PATH reads it)")
    parser.add_argument("--store", metavar="URL",
                        help="job store to record every attempt in and take kill/cancel orders from "
                             "(sqlite:///PATH or dynamodb://TABLE); it also holds periodic tasks' slot claims and "
                             "task locks")
    parser.add_argument("--store-keep-succeeded", type=option["--store-keep-succeeded"], metavar="DURATION",
                        help="how long succeeded attempts stay in the store (default 1d; 3600, 90m, 12h, 7d)")
    parser.add_argument("--store-keep-failed", type=option["--store-keep-failed"], metavar="DURATION",
                        help="how long other finished attempts stay in the store (default 7d)")
    parser.add_argument("--metrics", metavar="[HOST:]PORT",
                        help="serve Prometheus metrics here, for all processes (a bare port: 127.0.0.1 only; "
                             "needs pip install 'sqsmaster[metrics]')")
    parser.add_argument("--no-scheduler", action="store_const", const=True,
                        help="do not send periodic tasks' due slots from this worker")
    parser.set_defaults(func=run)


def settings(args: argparse.Namespace, environ: Any = os.environ) -> argparse.Namespace:
    """``args`` completed from the environment (:data:`ENVIRONMENT`) and :data:`DEFAULTS`, and checked
    together; raises UsageError naming the flag or the variable."""
    for option, attribute, variable, parse in ENVIRONMENT:
        if attribute == "log_level":
            if not getattr(args, "command_log_level", None) and not args.log_level and environ.get(variable):
                args.log_level = _from_environment(variable, environ[variable], parse, option)
            continue
        if getattr(args, attribute, None) is None and environ.get(variable, "") != "":
            setattr(args, attribute, _from_environment(variable, environ[variable], parse, option))
        if getattr(args, attribute, None) is None and attribute in DEFAULTS:
            setattr(args, attribute, DEFAULTS[attribute])
    if not args.url:
        raise UsageError("sqsmaster worker: error: the queue to work on is missing: give QUEUE_URL "
                         "(or set SQSMASTER_QUEUE_URL)")
    if not args.tasks:
        raise UsageError("sqsmaster worker: error: --tasks MODULE is missing (or set SQSMASTER_TASKS)")
    if args.log_format not in ("text", "json"):
        raise UsageError(f"sqsmaster worker: error: SQSMASTER_LOG_FORMAT={args.log_format!r}: must be text or json")
    _check_heartbeat(args)
    for url in [args.url, *args.queue]:
        if is_process_local(url):
            raise UsageError(
                f"sqsmaster worker: error: {url}: a mem:// queue lives inside one process, so a worker process would "
                "only ever see it empty; use a durable local queue shared by processes: sqlite:///PATH?queue=NAME "
                "or fq:///DIR")
    return args


def _from_environment(variable: str, text: str, parse: Callable[[str], Any], option: str) -> Any:
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"sqsmaster worker: error: {variable}={text!r} (for {option}): {exc}") from None
    if option == "--log-level" and value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"sqsmaster worker: error: {variable}={text!r}: must be DEBUG, INFO, WARNING or ERROR")
    return value


def _check_heartbeat(args: argparse.Namespace) -> None:
    """The heartbeat must land more than 1 s before the visibility runs out (the handler's rule, in flags)."""
    alarm = args.alarm_timeout if args.alarm_timeout is not None else max(args.sqs_timeout / 3, 0.5)
    if alarm + 1 < args.sqs_timeout:
        return
    if args.alarm_timeout is not None:
        raise UsageError(f"sqsmaster worker: error: --alarm-timeout {args.alarm_timeout:g} must be more than 1 s "
                         f"shorter than --sqs-timeout {args.sqs_timeout:g}, so each heartbeat lands before the "
                         "message's visibility runs out")
    raise UsageError(f"sqsmaster worker: error: --sqs-timeout {args.sqs_timeout:g} is too short: the heartbeat "
                     "(every third of it) must land more than 1 s before the visibility runs out; give more than "
                     "1.5 s")


def run(args: argparse.Namespace) -> int:
    from ..worker.facade import Worker
    from ..worker.worklog import configure_logging

    args = settings(args)
    configure_logging(args.log_format, log_level(args, default=20))
    if os.getcwd() not in sys.path:  # --tasks names a module of the project the worker runs in
        sys.path.insert(0, os.getcwd())
    worker = Worker(args.url, args.tasks, queues=args.queue, concurrency=args.concurrency, isolation=args.isolation,
                    sqs_timeout=args.sqs_timeout, alarm_timeout=args.alarm_timeout, hard_timeout=args.hard_timeout,
                    wait_time=args.wait_time, max_tasks=args.max_tasks, until_empty=args.until_empty,
                    prefetch=args.prefetch, grace=args.grace, dlq=args.dlq, job_log=args.job_log,
                    exit_at_deadline=True, store=args.store, store_keep_succeeded=args.store_keep_succeeded,
                    store_keep_failed=args.store_keep_failed,
                    metrics=args.metrics, scheduler=not args.no_scheduler)
    code = worker.run()
    # The process ends now: spare it the interpreter's last garbage collection, a walk over every object
    # of boto3's service models that took up to a second on a loaded machine, after the worker was done
    # (atexit handlers and the close of every file still run).
    gc.freeze()
    return code
