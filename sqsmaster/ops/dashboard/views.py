"""The pages: one HTML shell per view (the script fills it from ``/api/`` and refreshes it), and the timeline PNG.

The shell carries the CSRF token (a ``<meta>``) and whether the dashboard is read-only; the
pages hold no data of their own, so a refresh never reloads the page.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from ...errors import ConfigurationError
from ...store import AttemptRow, JobFilter, StoreError
from ...worker.jobs import JobRecord
from . import queries
from .api import parse_time
from .config import DashboardConfig

views = Blueprint("views", __name__)

#: The views, in the order the navigation lists them: (path, title).
VIEWS = [("overview", "Overview"), ("running", "Running"), ("jobs", "Jobs"), ("failures", "Failures"),
         ("dead-letters", "Dead letters"), ("workers", "Workers"), ("timeline", "Timeline")]
#: The most attempts one timeline draws (the newest of the window).
TIMELINE_LIMIT = 500
#: pyplot keeps global state: one drawing at a time across the server's threads.
_DRAWING = threading.Lock()


def _page(view: str, **extra: Any) -> str:
    config: DashboardConfig = current_app.config["DASHBOARD"]
    return render_template("page.html", view=view, views=VIEWS, title=dict(VIEWS).get(view, "Job"),
                           csrf_token=config.csrf_token, read_only=config.read_only, who=config.who(), **extra)


@views.errorhandler(StoreError)
def _store_down(error: StoreError) -> Any:
    """503 naming the store, as the API answers (the timeline reads the store): not an HTML 500."""
    return jsonify(error=str(error)), 503


@views.get("/")
def index() -> str:
    return _page("overview")


@views.get("/<any(overview, running, jobs, failures, 'dead-letters', workers, timeline):view>")
def page(view: str) -> str:
    return _page(view)


@views.get("/jobs/<message_id>")
def job(message_id: str) -> str:
    return _page("job", message_id=message_id)


def _record(row: AttemptRow, now: float) -> JobRecord:
    ended = row.ended if row.ended is not None else now
    return JobRecord(row.message_id, row.task, row.attempt, row.host, row.pid, row.submitted, row.started, ended,
                     row.runtime if row.runtime is not None else ended - row.started, row.outcome or "running",
                     row.exception, None, row.peak_memory, row.heartbeats)


@views.get("/timeline.png")
def timeline() -> Any:
    """The report's Gantt drawing of the attempts started in ``since``..``until`` (default: the last hour)."""
    from ..report import draw_timeline

    config: DashboardConfig = current_app.config["DASHBOARD"]
    now = time.time()
    try:
        since = parse_time("since", request.args.get("since"), now) or now - 3600
        until = parse_time("until", request.args.get("until"), now)
        rows = list(queries.scan(config.store, JobFilter(since=since, until=until), now, TIMELINE_LIMIT))
        if not rows:
            raise ConfigurationError("no attempt started in this window")
        handle, path = tempfile.mkstemp(suffix=".png")
        os.close(handle)
        try:
            with _DRAWING:
                draw_timeline([_record(row, now) for row in rows], path,
                              title=f"{len(rows)} attempts" + (" (the newest)" if len(rows) >= TIMELINE_LIMIT else ""))
            with open(path, "rb") as file:
                picture = file.read()
        finally:
            os.unlink(path)
    except ConfigurationError as exc:  # no matplotlib, a bad time, an empty window: said in words
        return jsonify(error=str(exc)), 400
    return Response(picture, mimetype="image/png", headers={"Cache-Control": "no-store"})
