"""Configuration: the typed schema (``schema``), ``conf/`` -> ``params.yaml`` -> ``Config`` (``params``),
and the project root that config paths are relative to (``paths``)."""

from movinet.config.params import (
    PARAMS_FILE,
    compose,
    config_dict,
    load_config,
    params_drift,
    read_params,
    render,
    to_config,
    write_params,
)
from movinet.config.paths import project_root, resolve_path
from movinet.config.schema import Config

__all__ = [
    "PARAMS_FILE",
    "Config",
    "compose",
    "config_dict",
    "load_config",
    "params_drift",
    "project_root",
    "read_params",
    "render",
    "resolve_path",
    "to_config",
    "write_params",
]
