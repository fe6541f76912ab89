"""The rooms of ``src/movinet`` import one way: the typed config and the file helpers underlie all,
models and data know nothing of the rest, inference never reaches into training or tracking (a
served model must not drag the trainer along), and nothing in the library imports the CLI."""

import ast
from pathlib import Path

import pytest

import movinet

PACKAGE = Path(movinet.__file__).parent
ALLOWED = {  # room -> movinet modules it may import besides itself
    "config": {"files"},
    "models": {"files"},
    "data": {"files", "config", "models"},
    "inference": {"files", "config", "models", "data"},
    "tracking": {"files", "config", "models", "data", "inference"},
    "training": {"files", "config", "models", "data", "inference", "tracking"},
}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        )
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


MAX_LINES = 60
LONG_BY_DESIGN = {"cli.py:build_parser"}  # the CLI's parser table: one entry per option


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(PACKAGE)}:{node.name}"
                if lines > MAX_LINES and where not in LONG_BY_DESIGN:
                    long.append(f"{where} ({lines} lines)")
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def layout_rows() -> dict[str, str]:
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            rows[cells[1].strip()] = cells[2]
    return rows


def test_readme_layout_matches_the_tree():
    rows = layout_rows()
    root = PACKAGE.parents[1]
    named = [p.strip("` ") for key in rows for p in key.split(",")]
    assert [p for p in named if not (root / p).exists()] == [], "the Layout table names paths that do not exist"
    for entry in sorted(PACKAGE.iterdir()):
        if entry.name.startswith(("_", ".")) or entry.suffix not in (".py", ""):
            continue
        key = f"`src/movinet/{entry.name}{'/' if entry.is_dir() else ''}`"
        assert key in rows, f"README's Layout has no row for {key}"
        if entry.is_dir():
            modules = sorted(p.name for p in entry.glob("*.py") if p.name != "__init__.py")
            missing = [m for m in modules if f"`{m}`" not in rows[key]]
            assert not missing, f"README's Layout row {key} does not name {missing}"
