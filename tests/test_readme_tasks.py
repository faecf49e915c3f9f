"""The README's examples for batch tasks, eager mode and the local parallel map run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.rst"


def examples(heading: str) -> list[str]:
    """The code of every literal block (after ``::``) in the README's subsection ``heading``."""
    text = README.read_text()
    section = text.split(f"\n{heading}\n{'~' * len(heading)}\n", 1)[1]
    section = re.split(r"\n[^\n]+\n[~=-]{4,}\n", section, maxsplit=1)[0]
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", section)
    return ["\n".join(line[4:] for line in block.splitlines()) for block in blocks]


def expected_output(code: str) -> list[str]:
    """The ``# ...`` comment lines that stand alone: what the example prints."""
    return [line[2:] for line in code.splitlines() if line.startswith("# ")]


@pytest.mark.parametrize("heading", ["Batch tasks", "Eager mode"])
def test_the_examples_print_what_they_say(heading, capsys):
    [code] = examples(heading)
    exec(compile(code, f"README.rst ({heading})", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == expected_output(code)


def test_the_local_map_examples_run_and_print_what_they_say(capsys):
    first, second, _benchmark_output = examples("A local parallel map")
    exec(compile(first, "README.rst (map)", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    # the timed-out line names the elapsed time, which varies: compare up to it
    assert [line.split(" exceeded")[0] for line in printed] == [
        line.split(" exceeded")[0] for line in expected_output(first)]
    exec(compile(second, "README.rst (LocalPool)", "exec"), {"__name__": "readme"})
