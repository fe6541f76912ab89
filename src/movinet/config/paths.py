"""Where the project is: the folder holding ``conf/config.yaml``. Config paths are relative to it."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``conf/`` (searched upwards from ``start`` or the working directory)."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no conf/config.yaml in {here} or above: run from the project folder")


def resolve_path(value: str | Path, root: str | Path | None = None) -> Path:
    """Paths in the config are relative to the project root (stages may run from anywhere)."""
    path = Path(value)
    return path if path.is_absolute() else project_root(root) / path
