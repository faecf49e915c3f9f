"""Periodic tasks for operators: what is scheduled, when it last fired and fires next, and the same schedules as
EventBridge Scheduler definitions for teams that prefer a managed scheduler (then run the workers with
``--no-scheduler``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..backends.sqs import endpoint_and_region
from ..encoding import encode_task
from ..errors import ConfigurationError
from ..store import FiredRow, JobStore
from ..worker.registry import Registry, TaskSpec
from ..worker.scheduler import BASELINE_OWNER, fifo_id, scheduled
from ..worker.schedules import Every

#: What stands for the IAM role EventBridge Scheduler sends with, when none is given.
ROLE_PLACEHOLDER = "arn:aws:iam::ACCOUNT:role/ROLE-THAT-MAY-SEND-TO-THE-QUEUE"
#: EventBridge Scheduler's rule for schedule names.
_NAME_CHARACTERS = re.compile(r"[^0-9A-Za-z_.-]")
_MAX_NAME = 64


@dataclass
class ScheduleRow:
    """One periodic task: its schedule in words, the latest slot it fired (None: never, or no store to ask)
    and the next slot after ``now``."""

    task: str
    schedule: str
    catch_up: str
    queue: str | None
    last: FiredRow | None
    next: float


def schedule_rows(registry: Registry, store: JobStore | None, now: float) -> list[ScheduleRow]:
    """Every scheduled task of ``registry``, by name; ``last`` from ``store`` when given."""
    rows = []
    for spec in _scheduled(registry):
        schedule = scheduled(spec)
        fired = store.fired(spec.name) if store is not None else None
        if fired is not None and fired.owner == BASELINE_OWNER:
            fired = None  # where the schedule started, not a slot it sent
        rows.append(ScheduleRow(spec.name, schedule.describe(), schedule.catch_up, schedule.queue, fired,
                                schedule.following(now)))
    return rows


def eventbridge_definitions(registry: Registry, queue_url: str | None, role_arn: str | None = None,
                            prefix: str = "sqsmaster-") -> tuple[list[dict[str, Any]], list[str]]:
    """``(definitions, warnings)``: one EventBridge Scheduler ``CreateSchedule`` input per scheduled task
    (``aws scheduler create-schedule --cli-input-json``), sending the task's body to its queue (the schedule's
    ``queue``, else ``queue_url``). Raises ConfigurationError for a schedule EventBridge cannot express or a
    task with no queue."""
    definitions, warnings = [], []
    for spec in _scheduled(registry):
        schedule = scheduled(spec)
        url = schedule.queue or queue_url
        if not url:
            raise ConfigurationError(f"task {spec.name!r}: no queue to send it to: give --queue URL")
        expression = schedule.eventbridge()
        if isinstance(schedule, Every) and expression.startswith("rate("):
            warnings.append(f"{spec.name}: {expression} counts from the schedule's creation, not from the grid "
                            f"the workers use ({schedule.describe()})")
        target: dict[str, Any] = {"Arn": queue_arn(url), "RoleArn": role_arn or ROLE_PLACEHOLDER,
                                  "Input": encode_task(spec.name, {})}
        if urlsplit(url).path.endswith(".fifo"):
            target["SqsParameters"] = {"MessageGroupId": fifo_id(spec.name)}
        definitions.append({
            "Name": _NAME_CHARACTERS.sub("-", prefix + spec.name)[:_MAX_NAME],
            "Description": f"sqsmaster task {spec.name}: {schedule.describe()}"[:512],
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": schedule.eventbridge_timezone(),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": target,
        })
    if role_arn is None and definitions:
        warnings.append(f"RoleArn is a placeholder ({ROLE_PLACEHOLDER}): give --role-arn")
    return definitions, warnings


def queue_arn(url: str) -> str:
    """The ARN of an SQS queue URL (``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``); ConfigurationError
    for a URL that names no SQS queue."""
    parts = urlsplit(url)
    path = [part for part in parts.path.split("/") if part]
    if parts.scheme not in ("http", "https") or len(path) != 2:
        raise ConfigurationError(f"not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME): {url!r}")
    region = endpoint_and_region(url)[1] or "us-east-1"
    return f"arn:aws:sqs:{region}:{path[0]}:{path[1]}"


def as_json(definitions: list[dict[str, Any]]) -> str:
    return json.dumps(definitions, indent=2)


def _scheduled(registry: Registry) -> list[TaskSpec]:
    return [registry.get(name) for name in registry.names() if registry.get(name).schedule is not None]
