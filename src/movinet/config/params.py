"""``conf/`` (Hydra) is the source of truth; ``params.yaml`` is its composition, the file DVC tracks.

``movinet params`` (re)writes ``params.yaml`` from ``conf/`` with any overrides, and
``movinet params --check`` fails when the two disagree. Stages read ``params.yaml`` back as a typed
``Config`` (``load_config``): what DVC tracked is exactly what runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from movinet.config.paths import project_root
from movinet.config.schema import OPTIMIZERS, Config, register_configs
from movinet.files import write_text_atomic

PARAMS_FILE = "params.yaml"
HEADER = "# Generated from conf/ by `movinet params`: edit conf/, not this file.\n"


def compose(overrides: Sequence[str] = (), root: str | Path | None = None) -> dict:
    """``conf/config.yaml`` with Hydra overrides, validated, as the plain dict ``params.yaml`` holds.
    Any problem (an unknown key or group, a wrong type, a value out of range) is a ``ValueError``
    naming the key."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    conf_dir = project_root(root) / "conf"
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(f"conf/: {_composition_error(exc)}") from None
    to_config(values)  # the range checks of the typed config
    return values


def _composition_error(exc: Exception) -> str:
    """Hydra's message with what OmegaConf said beneath it (the key and why), without Hydra's hint
    to append the key with ``+`` (the schema refuses unknown keys either way)."""
    text = str(exc).split("Config search path:")[0]  # Hydra lists its search path after a missing option
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("To append")]
    cause = exc.__cause__
    if cause is not None:  # e.g. "Value 'many' ... could not be converted to Integer", "full_key: ..."
        lines += [line.strip() for line in str(cause).splitlines() if line.strip() and "_type=" not in line]
    return "; ".join(dict.fromkeys(lines))


def to_config(values: Mapping | Config) -> Config:
    """A plain config (``params.yaml``, a run's ``config.yaml``) as the typed ``Config``: unknown
    keys, wrong types and values out of range are a ``ValueError`` naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(values, Config):
        return values
    schema = OmegaConf.structured(Config)
    optim = OPTIMIZERS.get(str((values.get("optim") or {}).get("name")))
    if optim is not None:  # the optimizer's own fields (RMSprop's alpha, momentum, eps)
        schema.optim = OmegaConf.structured(optim)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, dict(values)))
    except OmegaConfBaseException as exc:
        raise ValueError(f"config: {exc}") from None


def config_dict(cfg: Config) -> dict:
    """The typed config as plain data (enums as their names): for YAML, JSON, MLflow and checkpoints."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def render(params: Mapping) -> str:
    return HEADER + yaml.safe_dump(dict(params), sort_keys=False, default_flow_style=False)


def write_params(overrides: Sequence[str] = (), root: str | Path | None = None) -> Path:
    root = project_root(root)
    path = root / PARAMS_FILE
    write_text_atomic(path, render(compose(overrides, root)))
    return path


def read_params(root: str | Path | None = None) -> dict:
    """``params.yaml`` as written (plain values)."""
    path = project_root(root) / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `movinet params` to compose it from conf/")
    return yaml.safe_load(path.read_text())


def load_config(root: str | Path | None = None) -> Config:
    """The parameters of this run: ``params.yaml`` (what DVC tracked), typed and validated."""
    return to_config(read_params(root))


def params_drift(overrides: Sequence[str] = (), root: str | Path | None = None) -> str | None:
    """Why ``params.yaml`` is not the composition of ``conf/`` (with ``overrides``), or None.
    Values are compared, not text: ``dvc exp run`` (Hydra mode) writes the same values its own way."""
    path = project_root(root) / PARAMS_FILE
    if not path.is_file():
        return f"{path} is missing (run `movinet params`)"
    written, composed = yaml.safe_load(path.read_text()), compose(overrides, root)
    if written == composed:
        return None
    keys = sorted(_differences(written or {}, composed))
    return f"{path} differs from conf/ at {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''} (run `movinet params`)"


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y or (key in a) != (key in b):
            out.append(f"{prefix}{key}")
    return out
