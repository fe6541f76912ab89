"""One MLflow parent run per Hydra multirun: every job is a child run, the parent gets a summary.

Enabled in ``conf/config.yaml`` (``hydra.callbacks``). The parent's id reaches the jobs through the
environment (``MOVINET_PARENT_RUN_ID``), so it works for in-process and subprocess launchers alike
(joblib, submitit: they pickle this callback into every job, so it holds nothing that cannot travel).
A sweep that crashes never reaches ``on_multirun_end``; its parent run is then marked FAILED at exit
instead of staying RUNNING on a shared server.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from movinet.config import project_root, resolve_path
from movinet.tracking.client import TrackingClient
from movinet.tracking.runs import PARENT_RUN_ENV, run_tags
from movinet.tracking.store import ensure_experiment, tracking_uri


class MLflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.client: TrackingClient | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        uri = tracking_uri(config.mlflow.tracking_uri)
        experiment = ensure_experiment(config.mlflow.experiment, uri)
        self.client = TrackingClient(uri)
        root = project_root()
        name = f"sweep-{config.train.name}"
        tags = run_tags(
            root, resolve_path(config.data.extract.out_dir, root), resolve_path(config.data.labels.out_dir, root), name
        )
        tags.pop("mlflow.parentRunId", None)
        tags["movinet.sweep"] = "parent"
        self.parent_id = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        sweep_params = config.hydra.sweeper.get("params")
        sweep = OmegaConf.to_container(sweep_params, resolve=False) if sweep_params is not None else {}
        params = {f"sweep.{k}": str(v) for k, v in sweep.items()}
        params["sweep.overrides"] = " ".join(config.hydra.overrides.task)
        self.client.log_params(self.parent_id, params)
        os.environ[PARENT_RUN_ENV] = self.parent_id
        atexit.register(self._abandoned)

    def _abandoned(self) -> None:
        """At exit without ``on_multirun_end`` (a job raised, the sweep was interrupted)."""
        if self.parent_id is not None and self.client is not None:
            with contextlib.suppress(Exception):  # at exit: the store may be gone too
                self.client.set_terminated(self.parent_id, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.parent_id is None:
            return
        os.environ.pop(PARENT_RUN_ENV, None)
        client, parent = self.client, self.parent_id
        rows = self._job_rows()
        monitor, mode = config.train.monitor, config.train.monitor_mode
        scored = [r for r in rows if f"best_{monitor}" in r]
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda r: r[f"best_{monitor}"]) if scored else None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sweep_summary.csv"
            _write_rows(path, rows)
            client.log_artifact(parent, str(path))
        metrics = {"jobs": len(rows)}
        if best is not None:
            metrics[f"best_{monitor}"] = best[f"best_{monitor}"]
            client.set_tags(parent, {"best_run_id": best["run_id"], "best_overrides": best["overrides"]})
        client.log_metrics(parent, metrics)
        status = "FINISHED" if rows and all(r["status"] == "FINISHED" for r in rows) else "FAILED"
        client.set_terminated(parent, status)
        atexit.unregister(self._abandoned)
        self.parent_id = None

    def _job_rows(self) -> list[dict]:
        """One row per child run: name, status, overrides, and its best/val/test metrics."""
        client, parent = self.client, self.parent_id
        experiment = client.get_run(parent).info.experiment_id
        rows = []
        for child in client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'"):
            row = {
                "run_id": child.info.run_id,
                "run_name": child.info.run_name,
                "status": child.info.status,
                "overrides": child.data.tags.get("movinet.overrides", ""),
            }
            row.update({k: v for k, v in child.data.metrics.items() if k.startswith(("best_", "val_", "test_"))})
            rows.append(row)
        return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("run_name", "overrides"), k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
