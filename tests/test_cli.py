"""The command line, in-process and as the installed console script."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from sqsmaster.cli import main
from sqsmaster.ops.demo import run_demo
from sqsmaster.worker.jobs import JobLog


def test_help_lists_the_commands(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_prints_its_version():
    result = subprocess.run([sys.executable, "-m", "sqsmaster", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("sqsmaster ")


def test_the_demo_on_sqs_runs_to_exit_zero_in_under_a_minute_and_writes_its_job_log_and_timeline(tmp_path):
    # When the demo runs through the embedded SQS server, into a directory
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sqsmaster", "demo", "--sqs", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    # Then every task ended as expected, in under a minute, and it says so in a table per task
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert "every task ended as expected" in result.stdout and "moto" in result.stdout
    assert_the_demo_table(result.stdout.splitlines())
    # and it wrote the job log (10 attempts), the worker's log and the timeline picture where it said
    assert_the_demo_job_log(tmp_path)
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"timeline   {tmp_path / 'timeline.png'}" in result.stdout


def test_the_demo_runs_on_sqlite_with_no_server_and_without_matplotlib_skips_only_the_picture(tmp_path, monkeypatch):
    # Given no matplotlib (the demo runs in-process here; its worker is a process of its own)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    lines: list[str] = []
    # When the demo runs on its default queue
    assert run_demo(out_dir=str(tmp_path), out=lines.append) == 0
    # Then it ran on sqlite:// with no server, every task ended as expected, and it says how to get the picture
    assert "no server" in lines[0] and "every task ended as expected" in lines[-1]
    assert_the_demo_table(lines)
    assert any("pip install 'sqsmaster[plot]'" in line for line in lines)
    assert_the_demo_job_log(tmp_path)
    assert not (tmp_path / "timeline.png").exists()


def assert_the_demo_table(lines: list[str]) -> None:
    rows = {line.split()[0]: line for line in lines if line.startswith(("train ", "solve ", "fetch "))}
    assert "succeeded" in rows["train"] and "timed out -> dead-lettered" in rows["solve"]
    assert "failed -> dead-lettered" in rows["fetch"]
    assert any("heartbeats kept it hidden" in line for line in lines)


def assert_the_demo_job_log(directory) -> None:
    records = JobLog(directory / "jobs.log").records()
    assert len(records) == 10 and {r.outcome for r in records} == {"succeeded", "timed out", "failed", "dead-lettered"}
    assert "every queue is empty" in (directory / "worker.log").read_text()


def test_the_demo_without_out_leaves_no_directory_behind_and_says_how_to_keep_its_output(tmp_path, monkeypatch):
    # Given the temporary directories made under tmp_path
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lines: list[str] = []
    # When the demo runs with no --out
    assert run_demo(out=lines.append) == 0
    # Then neither its queue's directory nor its output directory is left, and it says how to keep the output
    assert list(tmp_path.iterdir()) == []
    assert "sqsmaster demo --out DIR keeps them" in lines[-2]
