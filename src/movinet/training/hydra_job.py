"""A Hydra job of ``pipelines/train.py``: which config a run uses and where it writes.

``params.yaml`` (what DVC tracked, including ``dvc exp run -S`` changes) is the base of every run;
the command line's overrides go on top, with Hydra's composition deciding their values: a dotted
key (``data.clips.num_frames=16``) sets that key, a group switch (``model=a2``) replaces the whole
section, and a preset of global keys (``debug=tiny``) sets every key it changes. A plain
``python pipelines/train.py`` therefore trains exactly what ``dvc repro`` would.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from movinet.config import PARAMS_FILE, Config, project_root, read_params, to_config

GLOBAL_GROUPS = ("debug",)  # groups whose options set keys anywhere (`# @package _global_`)


def _changes(default: Mapping, changed: Mapping, prefix: tuple = ()) -> dict[tuple, object]:
    """Key paths where ``changed`` differs from ``default`` (whole values, deepest level)."""
    out: dict[tuple, object] = {}
    for key, value in changed.items():
        before = default.get(key) if isinstance(default, Mapping) else None
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out.update(_changes(before, value, (*prefix, key)))
        elif value != before or key not in default:
            out[(*prefix, key)] = value
    return out


def _override_paths(overrides: list[str], composed: dict) -> dict[tuple, object]:
    """The key paths the command line set, with their composed values."""
    from hydra import compose

    paths: dict[tuple, object] = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key or key.startswith("hydra") or "@" in key:
            continue
        if key in GLOBAL_GROUPS:  # a preset: every key it changes against the plain composition
            plain = OmegaConf.to_container(compose("config"), resolve=True, enum_to_str=True)
            with_preset = OmegaConf.to_container(compose("config", [override]), resolve=True, enum_to_str=True)
            paths.update(_changes(plain, with_preset))
            continue
        node, path = composed, tuple(key.split("."))
        try:
            for part in path:
                node = node[part]
        except (KeyError, TypeError):
            continue  # e.g. sweep=grid: only Hydra settings, nothing in the job's config
        paths[path] = node
    return paths


def run_config(composed: DictConfig, overrides: list[str], root: Path) -> Config:
    values = OmegaConf.to_container(composed, resolve=True, enum_to_str=True)
    if not (root / PARAMS_FILE).is_file():
        return to_config(values)
    params = copy.deepcopy(read_params(root))
    for path, value in _override_paths(overrides, values).items():
        target = params
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = copy.deepcopy(value)
    return to_config(params)


def train_from_hydra(cfg: DictConfig) -> float:
    from movinet.training.run import run_training

    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    root = project_root()
    config = run_config(cfg, overrides, root)
    if hydra.mode == RunMode.MULTIRUN:
        out = Path(hydra.runtime.output_dir)
    else:
        out = root / "models" / config.train.name
    return run_training(config, out, root, overrides)["score"]
