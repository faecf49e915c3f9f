"""What the fleet views show, as functions of rows and a clock (no store, no sleeping)."""

from __future__ import annotations

import pytest

from sqsmaster.errors import ConfigurationError
from sqsmaster.ops.views import ago, job_view, parse_since, span, status_of, table, worker_view
from sqsmaster.store import AttemptRow, WorkerRow

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text, before", [("30s", 30), ("90m", 5400), ("1h", 3600), ("2d", 172800),
                                          ("1h30m", 5400), ("1w", 604800), ("1.5h", 5400)])
def test_since_takes_a_duration_before_now(text, before):
    assert parse_since(text, NOW) == NOW - before


def test_since_takes_an_iso_time_utc_unless_it_names_its_zone():
    assert parse_since("2027-01-15T08:00:00", NOW) == parse_since("2027-01-15T08:00:00Z", NOW) == NOW
    assert parse_since("2027-01-15T09:00:00+01:00", NOW) == 1_800_000_000


@pytest.mark.parametrize("text", ["", "yesterday", "1x", "h1", "2027-13-01"])
def test_since_refuses_anything_else_with_one_line_naming_it(text):
    with pytest.raises(ConfigurationError, match=f"--since {text!r}: not a duration"):
        parse_since(text, NOW)


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (192, "3m12s"),
                                            (3599, "59m59s"), (7500, "2h05m"), (86400 * 3 + 4 * 3600, "3d04h")])
def test_durations_read_as_an_operator_reads_them(seconds, shown):
    assert span(seconds) == shown
    assert ago(seconds) == f"{shown} ago"


def test_a_time_to_come_reads_in_the_future():
    assert ago(-192) == "in 3m12s"


def running(**changes) -> AttemptRow:
    fields = dict(task="solve", queue="q", host="h", pid=1, started=NOW - 300, deadline=NOW + 60, lease=30.0,
                  last_heartbeat=NOW - 5)
    fields.update(changes)
    return AttemptRow("m1", 1, **fields)


def test_a_running_row_shows_elapsed_time_left_and_heartbeat_age():
    view = job_view(running(), NOW)
    assert (view["status"], view["elapsed"], view["time_left"], view["heartbeat_age"]) == ("running", 300, 60, 5)


def test_a_row_silent_for_longer_than_its_lease_is_stale_with_no_time_left():
    # Given a heartbeat 31 s ago and a 30 s lease: the worker would have extended it by now if it lived
    view = job_view(running(last_heartbeat=NOW - 31), NOW)
    assert (view["status"], view["time_left"], view["heartbeat_age"]) == ("stale", None, 31)
    # and exactly at the lease it is still running (stale means *longer* than the lease)
    assert status_of(running(last_heartbeat=NOW - 30), NOW) == "running"


def test_a_finished_row_shows_its_runtime_and_outcome_only():
    view = job_view(running(outcome="timed out", ended=NOW - 10, runtime=290.0), NOW)
    assert (view["status"], view["elapsed"], view["time_left"], view["heartbeat_age"]) == ("timed out", 290, None,
                                                                                          None)


def test_workers_are_alive_stale_or_stopped():
    row = WorkerRow("h", 1, NOW - 1000, NOW - 121)
    assert worker_view(row, NOW)["state"] == "stale"
    assert worker_view(row, NOW, stale_after=200)["state"] == "alive"
    row.stopped = NOW - 100
    assert worker_view(row, NOW)["state"] == "stopped"


def test_tables_align_every_column_on_its_widest_cell():
    text = table(["A", "LONG HEADER", "C"], [["wide cell", "x", "last"], ["y", "z", "-"]])
    assert text.splitlines() == ["A          LONG HEADER  C",
                                 "wide cell  x            last",
                                 "y          z            -"]
