"""``sqsmaster scale``: the worker count a queue's backlog needs, printed or written to an ECS service."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import Any

from . import ACCESS_ERROR_CODES, EXIT_FAILURE, EXIT_OK, EXIT_QUEUE, EXIT_USAGE, UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scale", help="compute (or set on ECS) the worker count a queue's backlog needs",
        description="desired = ceil((visible + in flight [+ delayed]) / PER_WORKER), within [MIN, MAX]; 0 only "
                    "when the queues hold no message at all (delayed ones included). Several queues feeding one "
                    "service are summed. --print (the default) prints the count, one line per round, for any "
                    "orchestrator; --ecs sets it as the service's desired count, calling UpdateService only when "
                    "it changes. Scale-in stops ECS tasks with SIGTERM: give the task definition a stopTimeout of "
                    "at least the worker's --grace + 15 s. --every loops until SIGTERM or Ctrl-C (exit 0). "
                    "Exit codes: 0 ok, 1 a failed call, 2 bad arguments, 3 queue or ECS cluster/service missing "
                    "or unreachable.")
    parser.add_argument("queues", nargs="+", metavar="QUEUE_URL", help="the queues that feed the workers")
    parser.add_argument("--per-worker", type=int, required=True, metavar="N",
                        help="messages one worker takes care of (its --concurrency, or more for short tasks)")
    parser.add_argument("--min", type=int, default=0, dest="minimum", metavar="A", help="lower bound (default 0)")
    parser.add_argument("--max", type=int, default=None, dest="maximum", metavar="B",
                        help="upper bound (default 100, as KEDA's)")
    parser.add_argument("--count-delayed", action="store_true",
                        help="add delayed messages to the backlog (they cannot be received until due)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--ecs", metavar="CLUSTER/SERVICE", help="set this ECS service's desired count")
    target.add_argument("--print", dest="print_only", action="store_true",
                        help="only print the count (the default)")
    parser.add_argument("--json", action="store_true", help="print each round as a JSON object with the counts")
    parser.add_argument("--every", type=float, default=None, metavar="SECONDS",
                        help="run a round every SECONDS until SIGTERM/SIGINT")
    parser.add_argument("--scale-in-after", type=float, default=None, metavar="SECONDS",
                        help="with --every: lower the count only once the lower count has held this long "
                             "(default 60; 0 lowers at once)")
    parser.add_argument("--scale-in-when-idle", action="store_true",
                        help="lower the count only while no message is in flight, so scale-in never stops a "
                             "running task")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.scaling import DEFAULT_MAXIMUM, ScaleIn, Scaler, ScalingRule, open_depth_queue

    _check(args)
    rule = ScalingRule(args.per_worker, args.minimum, DEFAULT_MAXIMUM if args.maximum is None else args.maximum,
                       args.count_delayed)
    after = args.scale_in_after if args.scale_in_after is not None else (60.0 if args.every is not None else 0.0)
    scale_in = ScaleIn(after, args.scale_in_when_idle)
    queues: list[Any] = []
    try:
        queues.extend(open_depth_queue(url) for url in args.queues)
        scaler = Scaler(queues, rule, _service(args), scale_in)
        return _run(scaler, args)
    finally:
        for queue in queues:
            queue.close()


def _check(args: argparse.Namespace) -> None:
    from ..ops.scaling import DEFAULT_MAXIMUM

    maximum = DEFAULT_MAXIMUM if args.maximum is None else args.maximum
    for option, value, low in (("--per-worker", args.per_worker, 1), ("--min", args.minimum, 0), ("--max", maximum, 0)):
        if value < low:
            raise UsageError(f"sqsmaster scale: error: {option} must be >= {low}, not {value}")
    if args.minimum > maximum:
        raise UsageError(f"sqsmaster scale: error: --min {args.minimum} exceeds --max {maximum}")
    repeated = sorted({url for url in args.queues if args.queues.count(url) > 1})
    if repeated:
        raise UsageError(f"sqsmaster scale: error: queue given twice (its messages would count twice): {repeated[0]}")
    if args.every is None and args.scale_in_after is not None:
        raise UsageError("sqsmaster scale: error: --scale-in-after needs --every (one round has no past to hold)")
    if args.every is None and args.scale_in_when_idle and not args.ecs:
        raise UsageError("sqsmaster scale: error: --scale-in-when-idle needs --ecs or --every (a current count)")
    if args.every is not None and not args.every > 0:
        raise UsageError(f"sqsmaster scale: error: --every must be > 0 seconds, not {args.every}")


def _service(args: argparse.Namespace) -> Any:
    if not args.ecs:
        return None
    from ..backends.sqs import endpoint_and_region
    from ..ops.ecs import EcsService

    # No region configured: the queues' own (an ECS service usually runs beside its queue).
    return EcsService.from_path(args.ecs, region=endpoint_and_region(args.queues[0])[1])


def _run(scaler: Any, args: argparse.Namespace) -> int:
    from ..ops.ecs import ServiceError, ServiceNotFound
    from ..ops.scaling import scale_every

    try:
        if args.every is None:
            _show(scaler.round(), args)
            return EXIT_OK
        with _StopSignals() as stop:
            scale_every(scaler, args.every, lambda decision: _show(decision, args), lambda: stop.requested)
        return EXIT_OK
    except _StopNow:
        return EXIT_OK
    except ServiceError as exc:
        print(f"sqsmaster: error: {exc}", file=sys.stderr)
        if isinstance(exc, ServiceNotFound) or exc.code is None:
            return EXIT_QUEUE
        return EXIT_USAGE if exc.code in ACCESS_ERROR_CODES else EXIT_FAILURE


def _show(decision: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(decision.as_dict()), flush=True)
    elif args.ecs:
        depth, was = decision.depth, decision.service
        print(f"{args.ecs}: desired {decision.desired} ({'set, was' if decision.changed else 'unchanged,'} "
              f"{was.desired}; running {was.running}) for {depth.visible} visible, {depth.in_flight} in flight, "
              f"{depth.delayed} delayed", flush=True)
    else:
        print(decision.desired, flush=True)


class _StopNow(BaseException):
    """A second stop signal: end now, even inside a call."""


class _StopSignals:
    """SIGTERM/SIGINT end a scaling loop: the first sets ``requested`` (the loop ends after its round), a
    second one raises :class:`_StopNow` (a round stuck in a call ends at once; a scaler holds no work to
    lose). The handler only sets a flag or raises."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise _StopNow()
        self.requested = True

    def __enter__(self) -> "_StopSignals":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

