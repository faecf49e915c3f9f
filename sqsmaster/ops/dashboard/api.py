"""The JSON API under ``/api/``: one GET per view, one POST per action (README: "The dashboard").

Bad parameters answer 400 with ``{"error": "..."}`` naming the parameter; a store that
cannot be reached answers 503. POSTs take a JSON body and pass the guards of :mod:`.app`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from ...errors import ConfigurationError
from ...store import THEN_CHOICES, JobFilter, StoreError
from . import actions, queries
from .config import DashboardConfig

api = Blueprint("api", __name__, url_prefix="/api")

#: Rows per page of /api/jobs by default, and the most a client may ask for.
PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
#: The most message ids one action takes (a request is served on one of the server's few threads).
MAX_IDS = 2000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _config() -> DashboardConfig:
    return current_app.config["DASHBOARD"]  # type: ignore[no-any-return]


@api.errorhandler(ConfigurationError)
def _bad_request(error: ConfigurationError) -> Any:
    return jsonify(error=str(error)), 400


@api.errorhandler(StoreError)
def _store_down(error: StoreError) -> Any:
    if request.method == "POST":  # a write that timed out may still land (DynamoDB, a partition): say so
        return jsonify(error=f"{error}; the action may be partly done: look before trying again"), 503
    return jsonify(error=str(error)), 503


def parse_time(name: str, text: str | None, now: float) -> float | None:
    """A time parameter: epoch seconds, an ISO 8601 date/time, or an age such as ``30m``, ``2h``, ``7d``."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * _UNITS[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigurationError(f"{name} must be epoch seconds, an ISO date/time or an age like 2h, not {text!r}") \
            from None


def job_filter(args: Any, now: float) -> JobFilter:
    """The filter of a /api/jobs query string (empty parameters mean any)."""
    values = {name: (args.get(name) or None) for name in ("status", "task", "queue", "worker", "exception", "text",
                                                          "message_id")}
    return JobFilter(since=parse_time("since", args.get("since"), now),
                     until=parse_time("until", args.get("until"), now), **values)


@api.get("/overview")
def overview() -> Any:
    config = _config()
    return jsonify(queries.overview(config.store, config.queues, config.depths, time.time(), config.summaries))


@api.get("/running")
def running() -> Any:
    now = time.time()
    return jsonify(now=now, rows=queries.running(_config().store, now))


@api.get("/jobs")
def jobs() -> Any:
    now = time.time()
    where = job_filter(request.args, now)
    try:
        limit = int(request.args.get("limit", PAGE_SIZE))
    except ValueError:
        raise ConfigurationError("limit must be a whole number") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    config = _config()
    page = config.store.attempts(where, now, limit=limit, cursor=request.args.get("cursor") or None)
    # keyed by the filter as written (``since=2h`` stays one key as time passes), not by the page
    key = tuple(sorted((name, value) for name, value in request.args.items() if name not in ("cursor", "limit")))
    total = config.counts.get(key, lambda: config.store.count(where, now))
    return jsonify(now=now, rows=[queries.row_json(row, now) for row in page.rows], cursor=page.cursor,
                   total=total)


@api.get("/jobs/<message_id>")
def job(message_id: str) -> Any:
    now = time.time()
    rows = _config().store.attempts_of(message_id)
    if not rows:
        return jsonify(error=f"no attempt at message {message_id} in the job store"), 404
    return jsonify(now=now, message_id=message_id, attempts=[queries.row_json(row, now) for row in rows],
                   submit_command=queries.submit_command(rows[-1]))


@api.get("/failures")
def failures() -> Any:
    config, now = _config(), time.time()
    since_text = request.args.get("since") or ""
    since = parse_time("since", since_text, now)
    groups, truncated, as_of = config.summaries.get(
        ("failures", since_text), lambda: (*queries.failure_groups(config.store, now, since), now))
    return jsonify(now=now, as_of=as_of, groups=[queries.failure_json(group, now) for group in groups],
                   truncated=truncated)


@api.get("/dead-letters")
def dead_letters() -> Any:
    config, now = _config(), time.time()
    rows, truncated, as_of = config.summaries.get(("dead-letters",),
                                                  lambda: (*queries.dead_letters(config.store, now), now))
    depths = config.depths.get_many(sorted({row.queue for row in rows}))
    return jsonify(now=now, as_of=as_of, rows=[queries.row_json(row, now) for row in rows], truncated=truncated,
                   queues=[{"queue": queue, **depth} for queue, depth in depths.items()])


@api.get("/workers")
def workers() -> Any:
    now = time.time()
    return jsonify(now=now, rows=[queries.worker_json(row, now) for row in _config().store.workers()])


@api.get("/actions")
def audit() -> Any:
    return jsonify(rows=[vars(row) for row in _config().store.actions(200)])


@api.get("/config")
def settings() -> Any:
    config = _config()
    return jsonify(queues=config.queues, read_only=config.read_only, store=config.store.url, who=config.who())


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ConfigurationError("the request body must be a JSON object")
    return body


def _ids(body: dict[str, Any], required: bool) -> list[str] | None:
    ids = body.get("message_ids")
    if ids is None and not required:
        return None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ConfigurationError("message_ids must be a non-empty list of message ids")
    if len(ids) > MAX_IDS:
        raise ConfigurationError(f"message_ids: at most {MAX_IDS} per action, not {len(ids)}")
    return ids


@api.after_request
def _drop_summaries(response: Any) -> Any:
    """After any action (done, refused or failed partway), the summarising views are read afresh."""
    if request.method == "POST":
        _config().summaries.clear()
    return response


@api.post("/actions/kill")
def kill() -> Any:
    body, config = _body(), _config()
    then = body.get("then", "dead-letter")
    if then not in THEN_CHOICES:
        raise ConfigurationError(f"then must be one of {', '.join(THEN_CHOICES)}")
    ids = _ids(body, required=True)
    assert ids is not None
    return jsonify(actions.kill(config.store, ids, then, config.who(), time.time()).to_json())


@api.post("/actions/requeue")
def requeue() -> Any:
    body, config = _body(), _config()
    task, kind = body.get("task"), body.get("exception_type")
    if not isinstance(task, str) or not isinstance(kind, str):
        raise ConfigurationError("task and exception_type name the failure group to requeue")
    return jsonify(actions.requeue_group(config.store, task, kind, config.who(), time.time()).to_json())


@api.post("/actions/redrive")
def redrive() -> Any:
    body, config = _body(), _config()
    result = actions.redrive(config.store, _ids(body, required=False), config.who(), time.time())
    return jsonify(result.to_json())


@api.post("/actions/delete-dead-letters")
def delete_dead_letters() -> Any:
    body, config = _body(), _config()
    result = actions.redrive(config.store, _ids(body, required=False), config.who(), time.time(), send_back=False)
    return jsonify(result.to_json())
