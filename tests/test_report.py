"""``sqsmaster report``: a summary, a CSV and a timeline from a real job log."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from sqsmaster import TaskManager
from sqsmaster.cli import main
from sqsmaster.worker.jobs import JobLog

from .test_durable_queues import start_consumer

pytestmark = pytest.mark.xdist_group("report")  # one job log for the module


@pytest.fixture(scope="module")
def job_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The job log of two consumer processes that ran quick, slower and failing tasks on sqlite://."""
    tmp_path = tmp_path_factory.mktemp("report")
    url = f"sqlite://{tmp_path}/queue.db?queue=jobs&visibility_timeout=5&max_receive_count=2"
    with TaskManager(url) as manager:
        for n in range(4):
            manager.submit("Quick", n=n)
        for _ in range(2):
            manager.submit("Sleep", seconds=0.4)
        manager.submit("Fail", seconds=0.2)
    consumers = [start_consumer(url, tmp_path, "--until-empty", "--max-receive-count", "2") for _ in range(2)]
    assert [c.wait(60) for c in consumers] == [0, 0]
    return tmp_path / "jobs.log"


def test_every_attempt_is_recorded_with_its_outcome(job_log):
    records = JobLog(job_log).records()
    outcomes = sorted((r.task, r.attempt, r.outcome) for r in records)
    assert outcomes == [("Fail", 1, "failed"), ("Fail", 2, "dead-lettered")] + [("Quick", 1, "succeeded")] * 4 + [
        ("Sleep", 1, "succeeded")] * 2
    failed = next(r for r in records if r.outcome == "failed")
    assert failed.exception == "RuntimeError: this task always fails"
    assert "Traceback" in (failed.traceback or "")
    assert all(r.submitted <= r.started <= r.ended and r.peak_memory for r in records)
    assert all(r.runtime >= 0.4 for r in records if r.task == "Sleep")


def test_the_report_prints_a_summary_and_writes_a_csv_and_a_timeline(job_log, tmp_path, capsys):
    # When the report runs on the job log with both outputs
    code = main(["report", str(job_log), "--csv", str(tmp_path / "jobs.csv"),
                 "--timeline", str(tmp_path / "timeline.png")])
    # Then it prints a table per task, and writes one CSV row per attempt and a PNG picture
    out = capsys.readouterr().out
    assert code == 0
    assert "dead-lettered" in out and "Quick" in out and "8 attempts by" in out
    with open(tmp_path / "jobs.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 and {"task", "outcome", "started", "traceback"} <= set(rows[0])
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_timeline_says_how_to_install_it(job_log, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(job_log), "--timeline", str(tmp_path / "t.png")]) == 2
    assert "pip install 'sqsmaster[plot]'" in capsys.readouterr().err


def test_a_missing_job_log_is_a_usage_error_in_one_line(tmp_path, capsys):
    # a path the user gave that cannot be read is bad input (exit 2), as for submit-file; 1 is "the work failed"
    assert main(["report", str(tmp_path / "nothing.log")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the job log" in err and len(err.splitlines()) == 1


def test_the_timeline_draws_a_dead_lettered_attempt_of_0_s_in_its_own_colour(tmp_path):
    from matplotlib.image import imread

    from sqsmaster.ops.report import OUTCOME_COLOURS, WAIT_COLOUR, draw_timeline
    from sqsmaster.worker.jobs import JobRecord

    # Given a 20 s task, and a message dead-lettered by an attempt of 0 s at its start, after a 10 s wait
    def record(task: str, started: float, ended: float, outcome: str) -> JobRecord:
        return JobRecord("m-" + task, task, 1, "host", 1, 0.0 if task == "dead" else started, started, ended,
                         ended - started, outcome)

    records = [record("long", 0.0, 20.0, "succeeded"), record("dead", 10.0, 10.0, "dead-lettered")]
    # When the timeline is drawn
    draw_timeline(records, tmp_path / "t.png")
    # Then, left of the legend, the dead-lettered bar shows in its own colour, apart from the grey wait
    pixels = imread(str(tmp_path / "t.png"))[:, :, :3]
    plot = pixels[:, : int(pixels.shape[1] * 0.75)]

    def count(colour: str) -> int:
        rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        return int((abs(plot - rgb) < 0.02).all(axis=2).sum())

    assert OUTCOME_COLOURS["dead-lettered"] != WAIT_COLOUR
    assert count(OUTCOME_COLOURS["dead-lettered"]) >= 20  # a bar a few pixels wide, not a hairline
    assert count(WAIT_COLOUR) > count(OUTCOME_COLOURS["dead-lettered"])
