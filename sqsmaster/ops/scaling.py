"""Autoscaling: how many workers a queue's backlog needs, and an ECS service set to that count.

``desired = ceil((visible + in flight [+ delayed]) / per_worker)``, within ``[minimum, maximum]``,
and 0 only when the queues hold nothing at all. In-flight messages count because each is a task
running (or about to) on a worker that must not be taken away; delayed ones only with
``count_delayed`` (they cannot be received yet), but a queue holding only delayed messages still
keeps one worker (``maximum`` permitting), ready when they come due.

:class:`Scaler` reads the depth (one GetQueueAttributes per queue per round, summed over the
queues that feed one service), applies a :class:`ScaleIn` policy and writes the count to an
:class:`~sqsmaster.ops.ecs.EcsService` only when it changes. :class:`Provisioner` is
sqstaskmaster's class of the same name, for its users' scaling scripts.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

from botocore.exceptions import ClientError

from ..backends import QueueBackend
from ..errors import ConfigurationError, QueueDoesNotExist, SqsMasterError
from .depth import DELAYED, IN_FLIGHT, VISIBLE, QueueDepth, open_depth_queue, read_depth
from .ecs import EcsService, ServiceCounts, ServiceNotFound, make_ecs_client

logger = logging.getLogger(__name__)

#: The default upper bound on the count (KEDA's default ``maxReplicaCount`` too): a scaler with no
#: ``--max`` must not ask a platform for a worker per message of a million-message backlog.
DEFAULT_MAXIMUM = 100


def check_rule(per_worker: int, minimum: int, maximum: int) -> None:
    """Raise ConfigurationError (naming the argument) unless ``1 <= per_worker`` and ``0 <= minimum <= maximum``."""
    for name, value, low in (("per_worker", per_worker, 1), ("minimum", minimum, 0), ("maximum", maximum, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an integer >= {low}, not {value!r}")
    if minimum > maximum:
        raise ConfigurationError(f"minimum ({minimum}) must not exceed maximum ({maximum})")


def desired_count(visible: int, in_flight: int, delayed: int, per_worker: int, minimum: int, maximum: int,
                  count_delayed: bool = False) -> int:
    """The number of workers for this backlog: ``ceil(backlog / per_worker)`` within ``[minimum, maximum]``.

    The backlog is ``visible + in_flight`` (``+ delayed`` with ``count_delayed``). The count is 0 only
    when all three counts are 0 (or ``maximum`` is 0): any message, delayed ones included, keeps
    at least one worker. Raises ConfigurationError for a bad rule (see :func:`check_rule`) or a
    negative count.
    """
    check_rule(per_worker, minimum, maximum)
    counts = {"visible": visible, "in_flight": in_flight, "delayed": delayed}
    for name, value in counts.items():
        if value < 0:
            raise ConfigurationError(f"{name} must be >= 0, not {value!r}")
    backlog = visible + in_flight + (delayed if count_delayed else 0)
    need = 0 if not any(counts.values()) else max(1, math.ceil(backlog / per_worker))
    return min(max(need, minimum), maximum)


class ScaleIn:
    """When a lower count may replace the current one. Scale-out is never held back.

    ``after`` (s): a lower count must hold that long first. SQS's counts are approximate and
    lag (AWS: "eventually consistent"), and they dip for a moment between one task's delete and
    the next receive; every scale-in stops a worker (SIGTERM, a task finished or released) and the
    next scale-out starts a cold one, so a count that follows each dip thrashes the service.
    ``when_idle``: lower the count only while no message is in flight, so scale-in never stops a
    running task (sqstaskmaster's all-or-nothing trade: the tail of a run keeps idle workers).
    ``clock`` is injectable for tests.
    """

    def __init__(self, after: float = 0.0, when_idle: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if after < 0:
            raise ConfigurationError(f"scale-in delay must be >= 0 s, not {after!r}")
        self.after = after
        self.when_idle = when_idle
        self._clock = clock
        self._lower_since: float | None = None

    def apply(self, target: int, current: int, depth: QueueDepth) -> int:
        """The count to set: ``target``, or ``current`` while a scale-in is held back."""
        if target >= current:
            self._lower_since = None
            return target
        if self.when_idle and depth.in_flight > 0:
            return current
        now = self._clock()
        if self._lower_since is None:
            self._lower_since = now
        if now - self._lower_since < self.after:
            return current
        self._lower_since = None
        return target


@dataclass(frozen=True)
class Decision:
    """One scaling round: the depth read, the formula's ``target``, the ``desired`` count after the scale-in
    policy, the service's counts before (None without a service) and whether UpdateService was called."""

    depth: QueueDepth
    target: int
    desired: int
    service: ServiceCounts | None = None
    changed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScalingRule:
    """``per_worker`` messages per worker, within ``[minimum, maximum]`` (see :func:`desired_count`)."""

    per_worker: int
    minimum: int = 0
    maximum: int = DEFAULT_MAXIMUM
    count_delayed: bool = False

    def __post_init__(self) -> None:
        check_rule(self.per_worker, self.minimum, self.maximum)

    def desired(self, depth: QueueDepth) -> int:
        return desired_count(depth.visible, depth.in_flight, depth.delayed, self.per_worker, self.minimum,
                             self.maximum, count_delayed=self.count_delayed)


class Scaler:
    """Sets a service's desired count from the depth of the queues that feed it, one :meth:`round` at a time.

    ``service`` None: compute only (``sqsmaster scale --print``). ``scale_in`` holds back lowering
    the count (default: lower at once); with no service the current count is the last one computed.
    """

    def __init__(self, queues: Sequence[QueueBackend], rule: ScalingRule, service: EcsService | None = None,
                 scale_in: ScaleIn | None = None) -> None:
        if not queues:
            raise ConfigurationError("scaling needs at least one queue")
        self.queues = list(queues)
        self.rule = rule
        self.service = service
        self.scale_in = scale_in or ScaleIn()
        self._last: int | None = None

    def round(self) -> Decision:
        """Read the depth, compute the count, write it if it changed. Raises QueueDoesNotExist, QueueError,
        DepthUnknown, ServiceNotFound, ServiceError; nothing is written when the depth could not be read."""
        depth = read_depth(self.queues)
        target = self.rule.desired(depth)
        counts = self.service.counts() if self.service is not None else None
        current = counts.desired if counts is not None else self._last
        desired = target if current is None else self.scale_in.apply(target, current, depth)
        changed = False
        if self.service is not None and counts is not None:
            changed = self.service.set_desired(desired, current=counts.desired)
        logger.info("backlog visible=%d in_flight=%d delayed=%d: target %d, desired %d%s", depth.visible,
                    depth.in_flight, depth.delayed, target, desired,
                    "" if counts is None else f" (was {counts.desired}, running {counts.running})")
        self._last = desired
        return Decision(depth, target, desired, counts, changed)


class ServiceState(enum.Enum):
    """What :meth:`Provisioner.service_state` says of a service: only an ACTIVE one is scaled."""

    STARTING = enum.auto()
    ACTIVE = enum.auto()
    STOPPING = enum.auto()
    FAILING = enum.auto()


class Provisioner:
    """sqstaskmaster's ``Provisioner``: sets ECS services' desired counts from their queues' depth, by rules.

    ``rules`` is an iterable of dicts: ``QUEUE_NAME`` (the queue's URL), ``SERVICE_NAME``,
    ``CLUSTER_NAME``, and either ``ACTIVE_SIZE`` (sqstaskmaster's all-or-nothing: that many workers
    while any message is visible, in flight or delayed, else 0) or ``PER_WORKER`` with ``MAX_SIZE``
    (or ``ACTIVE_SIZE`` as the maximum) and an optional ``MIN_SIZE``: proportional, see
    :func:`desired_count` (delayed messages count unless the rule sets ``COUNT_DELAYED`` False, as
    sqstaskmaster counted them). A missing key is a KeyError and a bad value a ConfigurationError, here.

    Call :meth:`run` on a schedule. Each rule reads its queue once (GetQueueAttributes), asks
    :meth:`service_state` (override it to skip services being deployed) and describes the service,
    then calls UpdateService only when the count changes (sqstaskmaster wrote on every run). A
    ClientError (an unreachable or missing queue or service included) or an unknown depth is
    logged and passed to ``notify(exception, context=rule)``, and the next rule runs.

    ``sqs`` / ``ecs``: boto3 clients to use (tests, custom endpoints). Without ``sqs``, each
    queue URL gets a client of its own for its endpoint; without ``ecs``, one from the standard
    AWS configuration. ``self.sqs`` is that SQS client or None (sqstaskmaster's was a resource).
    """

    QUEUE_NAME = "queue_name"
    SERVICE_NAME = "service_name"
    CLUSTER_NAME = "cluster_name"
    ACTIVE_SIZE = "active_size"
    PER_WORKER = "per_worker"
    MIN_SIZE = "min_size"
    MAX_SIZE = "max_size"
    COUNT_DELAYED = "count_delayed"

    QUEUE_DEPTH_ATTRIBUTES = {"pending_jobs": VISIBLE, "running_jobs": IN_FLIGHT, "scheduled_jobs": DELAYED}

    def __init__(self, rules: Iterable[dict[str, Any]], notify: Callable[..., Any] | None = None, *,
                 sqs: Any = None, ecs: Any = None) -> None:
        if not hasattr(rules, "__iter__"):
            raise TypeError(f"Rules must be iterable: {rules}")
        self._rules = list(rules)  # a generator would be spent by the checks below before run() saw it
        for rule in self._rules:
            self._check(rule)
        self._notify = notify
        self.sqs = sqs
        self.ecs = ecs if ecs is not None else make_ecs_client()
        self._queues: dict[str, QueueBackend] = {}
        self._warned_default_state = False

    def _check(self, rule: Any) -> None:
        if not isinstance(rule, dict):
            raise TypeError(f"Each rule must be a dictionary: {rule}")
        for key in (self.QUEUE_NAME, self.SERVICE_NAME, self.CLUSTER_NAME):
            if key not in rule:
                raise KeyError(f"Rules must specify the {key}")
        if self.PER_WORKER not in rule:
            if self.ACTIVE_SIZE not in rule:
                raise KeyError(f"Rules must specify the {self.ACTIVE_SIZE}")
            if self.MIN_SIZE in rule or self.MAX_SIZE in rule:
                raise ConfigurationError(f"rule for {rule[self.QUEUE_NAME]}: {self.MIN_SIZE}/{self.MAX_SIZE} "
                                         f"take effect only with {self.PER_WORKER}")
            check_rule(1, 0, rule[self.ACTIVE_SIZE])
            return
        if self.MAX_SIZE not in rule and self.ACTIVE_SIZE not in rule:
            raise KeyError(f"Rules with {self.PER_WORKER} must specify the {self.MAX_SIZE} (or {self.ACTIVE_SIZE})")
        check_rule(*self._bounds(rule))

    def _bounds(self, rule: dict[str, Any]) -> tuple[int, int, int]:
        return (rule[self.PER_WORKER], rule.get(self.MIN_SIZE, 0),
                rule[self.MAX_SIZE] if self.MAX_SIZE in rule else rule[self.ACTIVE_SIZE])

    def run(self) -> None:
        """For each rule, check the queue depth and adjust the service count (see the class docstring)."""
        logger.info("Checking queue for work and scaling service resources")
        for rule in self._rules:
            logger.debug("running rule: %s", rule)
            try:
                self._run_rule(rule)
            except (ClientError, SqsMasterError) as exc:
                logger.exception("Failed to update resources for rule %s", rule)
                self.notify(exc, context=rule)

    def _run_rule(self, rule: dict[str, Any]) -> None:
        url = rule[self.QUEUE_NAME]
        attributes = self._queue(url).get_attributes()
        count = self.rule_count(rule, QueueDepth.from_attributes(attributes, url))
        state = self.service_state(rule)
        if state == ServiceState.ACTIVE:
            changed = EcsService(rule[self.CLUSTER_NAME], rule[self.SERVICE_NAME], self.ecs).set_desired(count)
            logger.info("%s: %s %s to %s count", "Setting" if changed else "Keeping", rule[self.CLUSTER_NAME],
                        rule[self.SERVICE_NAME], count)
        else:
            logger.info("Service: %s %s is in state: %s; Desired count will not be adjusted",
                        rule[self.CLUSTER_NAME], rule[self.SERVICE_NAME], state)
        self.log_queue_depth(attributes, rule)

    def rule_count(self, rule: dict[str, Any], depth: QueueDepth) -> int:
        """The desired count ``rule`` gives for ``depth``: all-or-nothing, or proportional with ``per_worker``."""
        if self.PER_WORKER not in rule:
            return int(rule[self.ACTIVE_SIZE]) if depth.visible + depth.in_flight + depth.delayed > 0 else 0
        return desired_count(depth.visible, depth.in_flight, depth.delayed, *self._bounds(rule),
                             count_delayed=bool(rule.get(self.COUNT_DELAYED, True)))

    def _queue(self, url: str) -> QueueBackend:
        if url not in self._queues:
            self._queues[url] = open_depth_queue(url, self.sqs)
        return self._queues[url]

    def get_description(self, rule: dict[str, Any]) -> dict[str, Any]:
        """The service's description (DescribeServices; can be large), or {} for an unknown service."""
        result = self.ecs.describe_services(cluster=rule[self.CLUSTER_NAME], services=[rule[self.SERVICE_NAME]],
                                            include=["TAGS"])
        if result["failures"] or not result["services"]:
            logger.error("ECS Describe Services Failed: %s", result["failures"])
            return {}
        return dict(result["services"][0])

    def get_tags(self, arn: str) -> list[dict[str, str]]:
        """The tags of a resource (ListTagsForResource); a bad ARN raises ClientError (InvalidParameterException)."""
        return list(self.ecs.list_tags_for_resource(resourceArn=arn)["tags"])

    def service_state(self, _rule: dict[str, Any]) -> ServiceState:
        """Override to manage service state (e.g. from a tag, see :meth:`get_tags`): only ACTIVE is scaled.

        The default says ACTIVE always, and warns once that it does.
        """
        if not self._warned_default_state:
            logger.warning("Provisioner using default 'always active' service_state implementation")
            self._warned_default_state = True
        return ServiceState.ACTIVE

    def log_queue_depth(self, queue_attributes: dict[str, Any], rule: dict[str, Any]) -> None:
        for name, attribute in self.QUEUE_DEPTH_ATTRIBUTES.items():
            logger.info("queue_health_monitor: name - %s; %s - %s", name, queue_attributes.get(attribute),
                        rule[self.QUEUE_NAME])

    def notify(self, exception: BaseException, context: Any = None) -> None:
        if self._notify:
            self._notify(exception, context=context or {})



#: Errors that end a scaling loop: a queue or service is missing, or the configuration is wrong; waiting mends
#: neither.
FATAL_ERRORS: tuple[type[BaseException], ...] = (ConfigurationError, QueueDoesNotExist, ServiceNotFound)


def scale_every(scaler: Scaler, every: float, on_round: Callable[[Decision], None], stopping: Callable[[], bool],
                *, fatal: tuple[type[BaseException], ...] = FATAL_ERRORS, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep, tick: float = 0.1) -> None:
    """Run ``scaler.round()`` every ``every`` seconds until ``stopping()``, passing each decision to ``on_round``.

    A round that fails with an error in ``fatal`` or any error in the first round ends the loop
    (raised: the configuration is wrong, or nothing was ever reachable); a later round's failure
    (a throttled or unreachable endpoint) is logged and the next round tries again. ``stopping`` is
    checked at least every ``tick`` seconds (a signal handler can only set a flag: see ``sqsmaster
    scale``). ``clock`` and ``sleep`` are injectable for tests.
    """
    if every <= 0:
        raise ConfigurationError(f"every must be > 0 s, not {every!r}")
    first = True
    while not stopping():
        started = clock()
        try:
            on_round(scaler.round())
        except fatal:
            raise
        except SqsMasterError as exc:
            if first:
                raise
            logger.warning("scaling round failed, trying again in %.3g s: %s", every, exc)
        first = False
        while not stopping() and (left := started + every - clock()) > 0:
            sleep(min(tick, left))
