"""One MLflow parent run per Hydra multirun: every job is a child run, the parent gets a summary.

Enabled in ``conf/config.yaml`` (``hydra.callbacks``). The parent's id reaches the jobs through the
environment (``MOVINET_PARENT_RUN_ID``), so it works for in-process and subprocess launchers alike.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from movinet.tracking.runs import PARENT_RUN_ENV, run_tags
from movinet.tracking.store import ensure_experiment, tracking_uri, with_retry


class MLflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.client = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        from movinet.config import project_root

        uri = tracking_uri(config.mlflow.tracking_uri)
        experiment = ensure_experiment(config.mlflow.experiment, uri)
        self.client = MlflowClient(uri)
        root = project_root()
        tags = run_tags(root, root / config.data.frames_dir, root / config.data.labels_dir,
                        f"sweep-{config.train.name}")
        tags.pop("mlflow.parentRunId", None)
        tags["movinet.sweep"] = "parent"
        run = with_retry(lambda: self.client.create_run(experiment, run_name=f"sweep-{config.train.name}", tags=tags))
        self.parent_id = run.info.run_id
        sweep_params = config.hydra.sweeper.get("params")
        sweep = OmegaConf.to_container(sweep_params, resolve=False) if sweep_params is not None else {}
        overrides = list(config.hydra.overrides.task)
        params = {f"sweep.{k}": str(v) for k, v in sweep.items()}
        params["sweep.overrides"] = " ".join(overrides)[:6000]
        with_retry(lambda: [self.client.log_param(self.parent_id, k, v) for k, v in params.items()])
        os.environ[PARENT_RUN_ENV] = self.parent_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.parent_id is None:
            return
        os.environ.pop(PARENT_RUN_ENV, None)
        client, parent = self.client, self.parent_id
        children = with_retry(lambda: client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        ))
        monitor, mode = config.train.monitor, config.train.monitor_mode
        rows = []
        for child in children:
            row = {"run_id": child.info.run_id, "run_name": child.info.run_name,
                   "status": child.info.status,
                   "overrides": child.data.tags.get("movinet.overrides", "")}
            row.update({k: v for k, v in child.data.metrics.items() if k.startswith(("best_", "val_", "test_"))})
            rows.append(row)
        scored = [r for r in rows if f"best_{monitor}" in r]
        best = (max if mode == "max" else min)(scored, key=lambda r: r[f"best_{monitor}"]) if scored else None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sweep_summary.csv"
            fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("run_name", "overrides"), k))
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
            with_retry(lambda: client.log_artifact(parent, str(path)))
        with_retry(lambda: client.log_metric(parent, "jobs", len(rows)))
        if best is not None:
            with_retry(lambda: client.log_metric(parent, f"best_{monitor}", best[f"best_{monitor}"]))
            with_retry(lambda: client.set_tag(parent, "best_run_id", best["run_id"]))
            with_retry(lambda: client.set_tag(parent, "best_overrides", best["overrides"]))
        status = "FINISHED" if rows and all(r["status"] == "FINISHED" for r in rows) else "FAILED"
        with_retry(lambda: client.set_terminated(parent, status))
        self.parent_id = None
