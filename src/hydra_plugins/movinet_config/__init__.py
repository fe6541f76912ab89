"""A Hydra plugin package in name only: Hydra imports every module under ``hydra_plugins`` when it
starts, so importing this one registers movinet's typed config schema in the ConfigStore. That is how
``conf/config.yaml``'s ``movinet_schema`` resolves in processes that never import movinet themselves,
such as ``dvc exp run``'s composition of ``conf/``."""

from movinet.config.schema import register_configs

register_configs()
