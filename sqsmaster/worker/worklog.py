"""The worker's log: one line per lifecycle event of a message, as text or JSON.

Events: ``received``, ``started``, ``extended`` (a heartbeat; at DEBUG), ``succeeded``,
``failed``, ``timed out``, ``stuck``, ``retry scheduled``, ``released``,
``dead-lettered``, ``handed back``, ``kept`` (past its last retry with nowhere to go),
``rejected`` (malformed or unknown task), ``lease lost``. Each line names the message
id, the task, the attempt and, once it ran, the runtime; the same fields are attributes
of the log record (``record.event``, ``record.message_id``...) for a JSON formatter,
where an event is one word (:func:`event_name`: ``timed_out``, ``dead_lettered``) and
every line carries ``pid`` and ``host``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from .jobs import JobRecord

logger = logging.getLogger("sqsmaster.worker")

#: Record attributes a JSON line carries when an event set them.
EVENT_FIELDS = ("event", "message_id", "task", "attempt", "runtime", "queue", "delay", "dlq", "reason", "isolation",
                "visibility", "extensions", "then", "action")


@dataclass
class AttemptRecord:
    """One attempt of one message, as the worker saw it; passed to ``Worker(on_attempt_end=...)``.

    ``outcome`` is the handler's (``succeeded``, ``failed``, ``timed out``,
    ``stuck``, ``interrupted``) or ``rejected``; ``action`` what became of the
    message: ``deleted``, ``retry``, ``dead-lettered``, ``handed to redrive``,
    ``kept``, ``released``, ``lease lost``. ``job`` is the attempt's
    :class:`~sqsmaster.worker.jobs.JobRecord` (what ``--job-log`` writes), None for a message
    that came back past its last retry and was not run.
    """

    message_id: str
    queue_url: str
    task: str | None
    attempt: int
    outcome: str
    action: str
    started_at: float
    runtime: float | None = None
    error: str | None = None
    delay: int | None = None
    job: JobRecord | None = None
    #: The message's lease was lost while the task ran (whatever the outcome): another worker may run it too.
    lease_lost: bool = False


def event_name(event: str) -> str:
    """An event as one word for machines (JSON logs): ``"dead-lettered"`` -> ``"dead_lettered"``."""
    return event.replace(" ", "_").replace("-", "_")


def log_event(event: str, message_id: str | None, task: str | None = None, attempt: int | None = None,
              level: int = logging.INFO, runtime: float | None = None, **fields: Any) -> None:
    """Log one lifecycle event as ``EVENT message ID task=NAME attempt=N [runtime=S] [key=value...]``
    (``record.event`` is :func:`event_name` of it)."""
    parts = [f"{event}", f"message {message_id}"]
    if task is not None:
        parts.append(f"task={task}")
    if attempt is not None:
        parts.append(f"attempt={attempt}")
    if runtime is not None:
        parts.append(f"runtime={runtime:.2f}s")
    parts.extend(f"{key}={value}" for key, value in fields.items() if value is not None)
    extra = {"event": event_name(event), "message_id": message_id, "task": task, "attempt": attempt,
             "runtime": None if runtime is None else round(runtime, 3), **fields}
    logger.log(level, "%s", " ".join(parts), extra=extra)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, host, message, and the event fields when present."""

    host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "pid": record.process, "host": self.host,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr as ``text`` or ``json`` at ``level``; heartbeats (``extended``) show at DEBUG."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The worker logs started/succeeded/retry itself, with the task name; the handler's own
    # info lines would say it twice. Its warnings and errors (tracebacks) stay.
    logging.getLogger("sqsmaster.supervise.handler").setLevel(max(level, logging.WARNING))
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
