"""``sqsmaster worker``: run registered tasks from one or more queues."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import textwrap
from typing import Any

from ..errors import ConfigurationError
from ..supervise import DEFAULT_HARD_TIMEOUT


def _epilog() -> str:
    from ..loop import EXIT_CODES
    from ..shutdown import POOL_KILL_MARGIN, SHUTDOWN_MARGIN

    codes = "\n".join(textwrap.fill(meaning, 78, initial_indent=f"  {code}  ", subsequent_indent="     ")
                      for code, meaning in sorted(EXIT_CODES.items()))
    shutdown = textwrap.fill(
        f"shutdown: after SIGTERM the worker exits within --grace + {SHUTDOWN_MARGIN:.0f} s whatever the endpoint "
        f"does (a pool within --grace + {POOL_KILL_MARGIN:.0f} s); give the platform a kill timeout of at least "
        f"--grace + {POOL_KILL_MARGIN + 5:.0f} s (ECS stopTimeout, Kubernetes terminationGracePeriodSeconds, "
        "systemd TimeoutStopSec).", 80)
    return f"exit codes:\n{codes}\n\n{shutdown}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker", help="run registered tasks from a queue", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Receive messages from QUEUE_URL (then from each --queue, in priority order), run the task each names "
            "from the --tasks module under a heartbeat and hard timeout, retry failures per the task's policy and "
            "dead-letter what cannot run. SIGTERM/SIGINT: stop receiving, release unstarted messages, let a "
            "running task finish within --grace; a second signal releases everything now.", 80),
        epilog=_epilog())
    parser.add_argument("url", metavar="QUEUE_URL", help="the queue to work on (highest priority)")
    parser.add_argument("--tasks", required=True, metavar="MODULE",
                        help="module whose @sqsmaster.task functions/handlers to run (pkg.mod or pkg.mod:registry)")
    parser.add_argument("--queue", action="append", default=[], metavar="URL",
                        help="another queue, taken only when the ones before it are empty (repeatable)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N", help="tasks at once, one process each")
    parser.add_argument("--isolation", default="signal", metavar="signal|process",
                        help="default isolation for tasks that set none (default: signal)")
    parser.add_argument("--sqs-timeout", type=float, default=30, metavar="S",
                        help="visibility held while a task runs (default 30)")
    parser.add_argument("--alarm-timeout", type=float, default=None, metavar="S",
                        help="heartbeat period (default: sqs-timeout / 3)")
    parser.add_argument("--hard-timeout", type=float, default=DEFAULT_HARD_TIMEOUT, metavar="S",
                        help="default hard timeout of a task (default 4 hours)")
    parser.add_argument("--grace", type=float, default=30, metavar="S",
                        help="seconds a running task may finish after SIGTERM/SIGINT (default 30)")
    parser.add_argument("--wait-time", type=float, default=20, metavar="S",
                        help="longest receive wait (≤ 20, default 20): an idle worker long-polls one queue at a "
                             "time for this long")
    parser.add_argument("--max-tasks", type=int, default=None, metavar="N",
                        help="exit after N tasks ended, whatever their outcome")
    parser.add_argument("--prefetch", type=int, default=0, metavar="N",
                        help="messages held beyond the running task, heartbeated until they start (default 0)")
    parser.add_argument("--until-empty", action="store_true",
                        help="exit once every queue is empty and no task of this worker runs")
    parser.add_argument("--dlq", default=None, metavar="URL",
                        help="dead-letter queue for queues without a redrive policy (send there, then delete)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON")
    parser.add_argument("--job-log", default=None, metavar="PATH",
                        help="append one JSON line per attempt (sqsmaster report PATH reads it)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..worker import Worker
    from ..worklog import configure_logging

    for url in [args.url, *args.queue]:
        if url.startswith("mem://"):
            raise ConfigurationError(
                f"{url}: a mem:// queue lives inside one process, so a worker process would only ever see it "
                "empty; use a durable local queue shared by processes: sqlite:///PATH?queue=NAME or fq:///DIR")
    configure_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    if os.getcwd() not in sys.path:  # --tasks names a module of the project the worker runs in
        sys.path.insert(0, os.getcwd())
    worker = Worker(args.url, args.tasks, queues=args.queue, concurrency=args.concurrency, isolation=args.isolation,
                    sqs_timeout=args.sqs_timeout, alarm_timeout=args.alarm_timeout, hard_timeout=args.hard_timeout,
                    wait_time=args.wait_time, max_tasks=args.max_tasks, until_empty=args.until_empty,
                    prefetch=args.prefetch, grace=args.grace, dlq=args.dlq, job_log=args.job_log,
                    exit_at_deadline=True)
    code = worker.run()
    # The process ends now: spare it the interpreter's last garbage collection, a walk over every object
    # of boto3's service models that took up to a second on a loaded machine, after the worker was done
    # (atexit handlers and the close of every file still run).
    gc.freeze()
    return code
