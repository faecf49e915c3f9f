"""The package's rooms import one way along the flow (README's "Where things live")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sqsmaster"

#: Which rooms each room may import. backends/ takes only the core's leaf primitives (errors, limits).
ALLOWED = {
    "core": {"backends"},
    "backends": {"core"},
    "supervise": {"core", "backends"},
    "store": {"core"},
    "worker": {"core", "backends", "supervise", "store"},
    "ops": {"core", "backends", "supervise", "worker", "store"},
    "cli": {"core", "backends", "supervise", "worker", "store", "ops"},
}
#: The package's front door and sqstaskmaster's import paths for MessageHandler and Provisioner re-export from
#: anywhere.
FRONT_DOORS = {"sqsmaster", "sqsmaster.__main__", "sqsmaster.message_handler", "sqsmaster.queue_scale"}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "core"


def imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every relative import in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = ["sqsmaster", *path.relative_to(PACKAGE).with_suffix("").parts]
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found += [(module, target)] if node.module else [(module, f"{target}.{a.name}") for a in node.names]
    return found


def test_every_room_imports_only_the_rooms_before_it_in_the_flow():
    wrong = sorted(f"{source} -> {target}" for source, target in imports()
                   if source not in FRONT_DOORS and room_of(target) != room_of(source)
                   and room_of(target) not in ALLOWED[room_of(source)])
    assert wrong == []


def test_backends_take_only_the_cores_leaf_primitives():
    used = {target for source, target in imports()
            if room_of(source) == "backends" and room_of(target) == "core"}
    assert used <= {"sqsmaster.errors", "sqsmaster.limits"}
