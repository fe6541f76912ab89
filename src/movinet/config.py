"""Configuration: ``conf/`` (Hydra) is the source of truth; ``params.yaml`` is its composition.

DVC tracks ``params.yaml``; the stage scripts read it. ``movinet params`` (re)writes it from
``conf/`` with any overrides, and ``movinet params --check`` fails when the two disagree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from movinet.files import write_text_atomic

PARAMS_FILE = "params.yaml"


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``conf/`` (searched upwards from ``start`` or the working directory)."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no conf/config.yaml in {here} or above: run from the project folder")


def compose(overrides: Sequence[str] = (), root: str | Path | None = None) -> dict:
    """Compose ``conf/config.yaml`` with Hydra overrides into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = project_root(root) / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def render(params: dict) -> str:
    header = "# Generated from conf/ by `movinet params`: edit conf/, not this file.\n"
    return header + yaml.safe_dump(params, sort_keys=False, default_flow_style=False)


def write_params(overrides: Sequence[str] = (), root: str | Path | None = None) -> Path:
    root = project_root(root)
    path = root / PARAMS_FILE
    write_text_atomic(path, render(compose(overrides, root)))
    return path


def load_params(root: str | Path | None = None) -> dict:
    """The parameters of this run: ``params.yaml`` (what DVC tracked), as a dict."""
    path = project_root(root) / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `movinet params` to compose it from conf/")
    return yaml.safe_load(path.read_text())


def resolve_path(value: str | Path, root: str | Path | None = None) -> Path:
    """Paths in the config are relative to the project root (stages may run from anywhere)."""
    path = Path(value)
    return path if path.is_absolute() else project_root(root) / path
