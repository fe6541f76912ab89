"""Distributed training through its real parts: Lightning DDP with 2 CPU processes (gloo) launched by
``python pipelines/train.py trainer=ddp``, logging to a real MLflow store. One run, one set of files,
each validation clip counted once, resume from ``last.ckpt``; ``ddp_spawn`` keeps the best score."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from test_pipeline import (
    ENV,
    mlflow_client,
    project,  # noqa: F401  (the module-scoped tiny project fixture)
    sh,
)
from torch.utils.data import DistributedSampler

from movinet.data.datamodule import ShardedEvalSampler

pytestmark = pytest.mark.slow

# trainer=ddp replaces the whole trainer section (debug=tiny's log_every_n_steps=1 with it)
CPU_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
CPU_DDP += ["trainer.threads=1", "trainer.log_every_n_steps=1"]
ODD_VAL = ["data.clips.eval_clips_per_video=3"]  # 3 val videos x 3 clips: 2 ranks cannot split it evenly


def test_validation_shards_cover_each_clip_once():
    data = list(range(5))
    shards = [list(ShardedEvalSampler(data, num_replicas=2, rank=r)) for r in (0, 1)]
    assert shards == [[0, 2, 4], [1, 3]] and [len(ShardedEvalSampler(data, 2, r)) for r in (0, 1)] == [3, 2]
    padded = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert padded == [[0, 2, 4], [1, 3, 0]]  # what Lightning would use: clip 0 twice


def _params(root, *overrides: str) -> None:
    """params.yaml of the tiny project with 3 val videos, plus ``overrides``."""
    fractions = "data.labels.split_fractions=[0.6,0.2,0.2]"
    sh(sys.executable, "-m", "movinet.cli", "params", "debug=tiny", fractions, *overrides, cwd=root)


@pytest.fixture(scope="module")
def ddp_project(project):  # noqa: F811
    """The tiny project with 3 val videos (an odd number of validation clips)."""
    _params(project)
    sh("dvc", "repro", "ingest_labels", cwd=project)
    return project


def _runs(root, name: str):
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("movinet")
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")


def _train(root, *overrides: str, timeout: int = 600):
    return sh(sys.executable, "pipelines/train.py", *overrides, cwd=root, timeout=timeout)


def test_two_process_ddp_is_one_run_counting_each_clip_once(ddp_project):
    root = ddp_project
    _train(root, "train.name=single", *ODD_VAL)
    _train(root, "train.name=ddp", *CPU_DDP, *ODD_VAL)
    single, ddp = _runs(root, "single"), _runs(root, "ddp")
    assert len(ddp) == 1 and ddp[0].info.status == "FINISHED"  # rank 1 created no run
    assert int(single[0].data.metrics["val_clips"]) == int(ddp[0].data.metrics["val_clips"]) == 9
    record = json.loads((root / "models" / "ddp" / "run.json").read_text())
    assert record["finished"] is True and record["mlflow_run_id"] == ddp[0].info.run_id
    assert math.isfinite(record["best_val_acc"]) and record["best_val_acc"] == ddp[0].data.metrics["best_val_acc"]
    steps = [m.step for m in mlflow_client(root).get_metric_history(ddp[0].info.run_id, "train_loss")]
    assert sorted(steps) == list(range(4))  # train.steps=4 (tiny), each logged once, by rank 0
    assert sorted(p.name for p in (root / "models" / "ddp").iterdir()) == [
        "checkpoints",
        "config.yaml",
        "model.pt",
        "run.json",
    ]
    # the model is an ordinary one: the evaluate stage and predict take it
    sh(sys.executable, "pipelines/evaluate.py", "ddp", cwd=root)
    metrics = json.loads((root / "metrics" / "ddp.json").read_text())
    assert 0.0 <= metrics["test_acc"] <= 1.0
    video = sorted((root / "data" / "demo" / "videos").glob("*.mp4"))[0]
    done = sh(sys.executable, "-m", "movinet.cli", "predict", str(video), "--model", "models/ddp/model.pt", cwd=root)
    assert done.stdout.startswith(str(video))


def test_ddp_spawn_jobs_of_a_multirun_report_their_best_scores(ddp_project):
    """In a Hydra multirun each job trains with ddp_spawn (nothing re-executed): one parent, one child
    per job, and each child's score comes back from its checkpoint (the spawned fit keeps it)."""
    root = ddp_project
    overrides = ["-m", "train.name=spawn", *CPU_DDP, "trainer.strategy=ddp_spawn", *ODD_VAL]
    _train(root, *overrides, "data.loader.batch_size=2,4")
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("movinet")
    parent = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'sweep-spawn'")
    assert len(parent) == 1
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'"
    )
    assert sorted(c.data.params["data.loader.batch_size"] for c in children) == ["2", "4"]
    for child in children:
        assert math.isfinite(child.data.metrics["best_val_acc"]) and int(child.data.metrics["val_clips"]) == 9
    assert parent[0].data.metrics["jobs"] == 2


def test_interrupted_ddp_run_resumes_from_last_checkpoint(ddp_project):
    root, out = ddp_project, ddp_project / "models" / "ddp_resume"
    cmd = [sys.executable, "pipelines/train.py", "train.name=ddp_resume", "train.steps=40", "train.eval_interval=2"]
    cmd += CPU_DDP
    proc = subprocess.Popen(
        cmd, cwd=root, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    last, deadline = out / "checkpoints" / "last.ckpt", time.time() + 300
    while time.time() < deadline and not last.is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks, as a lost node would
    proc.wait()
    first = json.loads((out / "run.json").read_text())
    assert first["finished"] is False
    sh(*cmd, cwd=root, timeout=600)
    done = json.loads((out / "run.json").read_text())
    assert done["finished"] is True and done["mlflow_run_id"] == first["mlflow_run_id"]
    assert len(_runs(root, "ddp_resume")) == 1
    history = mlflow_client(root).get_metric_history(done["mlflow_run_id"], "train_loss")
    assert max(m.step for m in history) == 39


def test_ddp_under_dvc_repro(ddp_project):
    """trainer=ddp in params.yaml: `dvc repro train` trains with 2 processes and records one run."""
    root, params = ddp_project, (ddp_project / "params.yaml").read_text()
    try:
        _params(root, *CPU_DDP)
        done = sh("dvc", "repro", "train", cwd=root)
        assert "Running stage 'train'" in done.stdout
        record = json.loads((root / "models" / "video" / "run.json").read_text())
        run = mlflow_client(root).get_run(record["mlflow_run_id"])
        assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
        assert record["finished"] is True and int(run.data.metrics["val_clips"]) == 6  # 3 val videos x 2 (tiny)
        assert len(_runs(root, "video")) == 1
    finally:
        (root / "params.yaml").write_text(params)
