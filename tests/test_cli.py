"""The command line, in-process and as the installed console script."""

from __future__ import annotations

import subprocess
import sys

from sqsmaster.cli import main


def test_help_lists_the_commands(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_prints_its_version():
    result = subprocess.run([sys.executable, "-m", "sqsmaster", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("sqsmaster ")


def test_the_demo_runs_to_exit_zero_in_under_a_minute():
    result = subprocess.run([sys.executable, "-m", "sqsmaster", "demo"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dead-lettered" in result.stdout and "deleted" in result.stdout
