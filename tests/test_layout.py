"""The rooms of ``src/movinet`` import one way: models and data know nothing of the rest, inference
never reaches into training or tracking (a served model must not drag the trainer along), and
nothing in the library imports the CLI."""

import ast
from pathlib import Path

import pytest

import movinet

PACKAGE = Path(movinet.__file__).parent
ALLOWED = {  # room -> movinet modules it may import besides itself
    "models": {"files"},
    "data": {"files", "models"},
    "inference": {"files", "models", "data"},
    "tracking": {"files", "config", "models", "data", "inference"},
    "training": {"files", "config", "models", "data", "inference", "tracking"},
}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        rooms |= {n.split(".")[1] for n in names if n.startswith("movinet.")}
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_go_one_way(room):
    wrong = {}
    for path in sorted((PACKAGE / room).rglob("*.py")):
        bad = imported_rooms(path) - ALLOWED[room] - {room}
        if bad:
            wrong[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not wrong, f"imports against the layout: {wrong}"


def test_the_checker_sees_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom movinet.training.run import x\ndef f():\n    import movinet.tracking.store\n")
    assert imported_rooms(module) == {"training", "tracking"}
