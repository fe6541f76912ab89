"""Stage train_member: one temporal-ensemble member, an MLflow child run under the ensemble's parent."""

from __future__ import annotations

import os
from pathlib import Path

from movinet.config import Config, config_dict
from movinet.tracking.client import TrackingClient
from movinet.tracking.runs import PARENT_RUN_ENV, fingerprint, flatten
from movinet.tracking.store import ensure_experiment, tracking_uri
from movinet.training.ensemble import member_config, member_dir
from movinet.training.run import run_training


def parent_run(cfg: Config, root: Path) -> str:
    """The ensemble's MLflow parent run for this config: the open one every member finds again
    (made by the first)."""
    uri = tracking_uri(cfg.mlflow.tracking_uri, root)
    experiment = ensure_experiment(cfg.mlflow.experiment, uri)
    client = TrackingClient(uri)
    plain = {k: v for k, v in config_dict(cfg).items() if k != "register"}
    key = fingerprint(plain)
    query = f"tags.`movinet.ensemble` = '{key}' and attributes.status != 'FINISHED'"
    found = client.search_runs([experiment], query, max_results=1, order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment, run_name=cfg.ensemble.name, tags={"movinet.ensemble": key, "movinet.name": cfg.ensemble.name}
    )
    client.log_params(run.info.run_id, flatten(plain))
    return run.info.run_id


def train_member(cfg: Config, root: Path, offset: int) -> dict:
    member = member_config(cfg, offset)
    os.environ[PARENT_RUN_ENV] = parent_run(cfg, root)
    try:
        return run_training(member, member_dir(cfg, root, offset), root)
    finally:
        os.environ.pop(PARENT_RUN_ENV, None)
