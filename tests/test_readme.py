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
    docutils.core.publish_string(README.read_text(), writer="null", settings_overrides={"halt_level": 2})


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
        missing = [name for name in named if not (folder / f"{name}.py").exists()
                   and not (folder / name / "__init__.py").exists()]  # a module, or a package inside the room
        assert not missing, f"README's map names {missing} in {room}/, which has no such module"
        # and names every module there is, so a new module gets its place on the map
        unnamed = sorted({path.stem for path in folder.glob("*.py")} - set(named) - {"__init__", "__main__"})
        assert not named or not unnamed, f"README's map does not name {unnamed} in {room}/"


def source_headings(text: str) -> list[tuple[str, str]]:
    """``(title, underline character)`` of every line the source underlines as a heading."""
    lines = text.splitlines()
    return [(lines[i].strip(), lines[i + 1][0]) for i in range(len(lines) - 1)
            if lines[i].strip() and not lines[i].startswith(" ")
            and re.fullmatch(r"([-=~^])\1+", lines[i + 1]) and len(lines[i + 1]) >= len(lines[i].rstrip())]


def test_every_heading_is_rendered_as_a_section_and_every_top_level_one_is_in_the_contents():
    import docutils.core
    from docutils import nodes

    # Given the headings the source underlines (a heading glued to the paragraph before it renders as text)
    text = README.read_text()
    headings = source_headings(text)
    title, top = headings[0], headings[1][1]
    # When docutils renders the README
    doctree = docutils.core.publish_doctree(text, settings_overrides={"report_level": 5})
    sections = [section[0].astext() for section in doctree.findall(nodes.section)]
    [contents] = [topic for topic in doctree.findall(nodes.topic) if "contents" in topic["classes"]]
    listed = [reference.astext() for reference in contents.findall(nodes.reference)]
    # Then the first is the document's title, every other one a section, and the top-level ones the contents
    assert doctree["title"] == title[0]
    assert sections == [name for name, _ in headings[1:]]
    assert listed == [name for name, mark in headings[1:] if mark == top]
    assert "Durable local queues" in listed and "Migrating from sqstaskmaster" in listed


def test_the_moto_snippet_creates_its_queues_with_no_aws_configuration(sqs_server, monkeypatch, tmp_path, capsys):
    from sqsmaster.cli import main
    from sqsmaster.ops.admin import queue_status

    # Given no region and no credentials configured (a fresh machine)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # When the README's create line runs against our moto server (its port for the README's 5000)
    line = re.search(r"^    (sqsmaster create http://127\.0\.0\.1:5000/\S+.*?)\s+#", README.read_text(), re.M).group(1)
    argv = line.replace("http://127.0.0.1:5000", sqs_server.endpoint).split()[1:]
    assert main(argv) == 0, capsys.readouterr().err
    # Then the queue and its dead-letter queue exist, with the redrive policy
    status = queue_status(argv[1])
    assert status.dead_letter_url is not None and status.dead_letter_url.endswith("/work-dlq")
