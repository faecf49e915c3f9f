"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.rst"


def test_the_quick_start_runs_as_written(capsys):
    text = README.read_text()
    block = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text).group(1)
    code = "\n".join(line[4:] for line in block.splitlines())
    exec(compile(code, "README.rst", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == ["resizing images/cat.png to 640", "Resize succeeded"]


def test_the_readme_renders_without_a_warning():
    import docutils.core

    # halt at WARNING: a broken table or a section glued to a literal block fails here, not on PyPI
    docutils.core.publish_string(README.read_text(), writer_name="null", settings_overrides={"halt_level": 2})
