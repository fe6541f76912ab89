"""The Hydra side of training: which config a run uses and where it writes.

``params.yaml`` (what DVC tracked, including ``dvc exp run -S`` changes) is the base of every run;
the command line's overrides go on top, with Hydra's composition deciding their values (a group
switch like ``model=a2`` replaces the whole ``model`` section). A plain ``python pipelines/train.py``
therefore trains exactly what ``dvc repro`` would.
"""

from __future__ import annotations

import copy
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from movinet.config import PARAMS_FILE, load_params, project_root


def _override_path(override: str) -> list[str] | None:
    key = override.split("=", 1)[0].lstrip("+~")
    if not key or key.startswith("hydra") or "@" in key:
        return None
    return key.split(".")


def run_config(composed: DictConfig, overrides: list[str], root: Path) -> dict:
    values = OmegaConf.to_container(composed, resolve=True)
    if not (root / PARAMS_FILE).is_file():
        return values
    params = copy.deepcopy(load_params(root))
    for override in overrides:
        path = _override_path(override)
        if path is None:
            continue
        source, target = values, params
        try:
            for part in path[:-1]:
                source = source[part]
                target = target.setdefault(part, {})
            target[path[-1]] = copy.deepcopy(source[path[-1]])
        except (KeyError, TypeError):
            continue  # e.g. +sweep=grid: only Hydra settings, nothing in the job's config
    return params


def train_from_hydra(cfg: DictConfig) -> float:
    from movinet.training.run import run_training

    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    root = project_root()
    params = run_config(cfg, overrides, root)
    if hydra.mode == RunMode.MULTIRUN:
        out = Path(hydra.runtime.output_dir)
    else:
        out = root / "models" / params["train"]["name"]
    return run_training(params, out, root, overrides)["score"]
