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


def test_the_package_map_names_every_room_and_only_modules_that_exist():
    # Given the map in README's "Development" section
    package = README.parent / "sqsmaster"
    block = README.read_text().split("Where things live", 1)[1].split("::\n\n", 1)[1]
    rows = [line.split(None, 1) for line in block.splitlines()[:20] if line.startswith("    ") and "/" in line]
    rooms = {room.rstrip("/"): text for room, text in rows}
    # Then every subpackage has its line, and every line is a subpackage (or the core)
    subpackages = {path.parent.name for path in package.glob("*/__init__.py")}
    assert set(rooms) == subpackages | {"sqsmaster"}
    # And every line names exactly the modules of its room (cli/ names none: one module per subcommand)
    for room, text in rooms.items():
        folder = package if room == "sqsmaster" else package / room
        named = [name.strip() for name in text.split(":", 1)[1].split(",")] if ":" in text else []
        missing = [name for name in named if not (folder / f"{name}.py").exists()]
        assert not missing, f"README's map names {missing} in {room}/, which has no such module"
        # and names every module there is, so a new module gets its place on the map
        unnamed = sorted({path.stem for path in folder.glob("*.py")} - set(named) - {"__init__", "__main__"})
        assert not named or not unnamed, f"README's map does not name {unnamed} in {room}/"
