"""One training run: Lightning fit with checkpoints, MLflow logging and resume.

Writes ``<out>/model.pt`` (the best checkpoint as our format, with class names and the config),
``<out>/checkpoints/{best,last}.ckpt``, ``<out>/config.yaml`` (the exact config) and ``run.json``
(MLflow run id, config fingerprint, best score). An interrupted run with the same config resumes
from ``last.ckpt`` into the same MLflow run.

Under DDP every process runs this function (Lightning's ``ddp`` re-executes the script; SLURM's
``srun`` starts one per device). Rank 0 alone owns the run: it creates the MLflow run, logs, and
writes every file; the other ranks only train, and decide a resume by the same rule from the same
files, so all ranks start from the same ``last.ckpt``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from movinet.config import Config, config_dict, resolve_path
from movinet.data.datamodule import ClipDataModule
from movinet.files import write_text_atomic
from movinet.models import save_checkpoint
from movinet.tracking.client import TrackingClient, retry
from movinet.tracking.runs import fingerprint, flatten, read_run_record, run_tags, write_run_record
from movinet.tracking.store import ensure_experiment, tracking_uri
from movinet.training.initialise import initialise
from movinet.training.module import VideoClassifier


def global_rank() -> int:
    """This process's rank, from the launcher's environment (Lightning's ddp, SLURM, torchrun)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


@dataclass
class _Run:
    """What the steps of one run share: its config (typed and plain), folders and MLflow run."""

    cfg: Config
    plain: dict
    out: Path
    root: Path
    uri: str
    run_id: str | None = None
    resume_from: Path | None = None
    rank: int = 0

    def write_record(self, finished: bool, **extra) -> None:
        """``run.json``: this run's MLflow id and config fingerprint (what resume compares)."""
        record = {"mlflow_run_id": self.run_id, "fingerprint": fingerprint(self.plain), "finished": finished}
        write_run_record(self.out, {**record, **extra})


def _resume_state(run: _Run) -> None:
    """An interrupted run of the same config continues (MLflow run id, last.ckpt); else a clean folder."""
    record, last = read_run_record(run.out), run.out / "checkpoints" / "last.ckpt"
    if (
        record
        and run.cfg.train.resume
        and not record.get("finished")
        and record.get("fingerprint") == fingerprint(run.plain)
        and last.is_file()
    ):
        run.run_id, run.resume_from = record["mlflow_run_id"], last
    elif run.out.exists() and run.rank == 0:
        shutil.rmtree(run.out)


def _datamodule(cfg: Config, root: Path) -> ClipDataModule:
    data = ClipDataModule.from_config(cfg, root)
    data.setup()
    if not data.datasets["train"]:
        raise ValueError(
            "no training clips: check data.clips.num_frames / frame_stride against the video "
            "lengths and data.clips.discard_threshold against the labels"
        )
    if not data.datasets["val"] and not cfg.train.monitor.startswith("train_"):
        raise ValueError(
            f"the val split has no clips, so {cfg.train.monitor} cannot choose the best checkpoint: give val "
            "videos (data.labels.split_fractions, the CSV's split column, data.labels.split_by=time), or "
            "monitor a training metric instead (train.monitor=train_loss train.monitor_mode=min)"
        )
    return data


def _start_tracking(run: _Run, data: ClipDataModule, init_note: str, overrides: list[str] | None):
    """The MLflow logger of this run; a new run gets its tags and the flattened config as params."""
    from lightning.pytorch.loggers import MLFlowLogger

    if run.rank != 0:  # its logging calls are rank-zero-only: this logger never reaches the store
        return MLFlowLogger(experiment_name=run.cfg.mlflow.experiment, tracking_uri=run.uri)
    ensure_experiment(run.cfg.mlflow.experiment, run.uri)
    logger = MLFlowLogger(
        experiment_name=run.cfg.mlflow.experiment, tracking_uri=run.uri, run_name=run.cfg.train.name, run_id=run.run_id
    )
    run.run_id = logger.run_id
    if run.resume_from is None:
        client = TrackingClient(run.uri)
        extract, labels = run.cfg.data.extract, run.cfg.data.labels
        tags = run_tags(
            run.root,
            resolve_path(extract.out_dir, run.root),
            resolve_path(labels.out_dir, run.root),
            run.cfg.train.name,
        )
        tags["movinet.init"] = init_note
        if overrides:
            tags["movinet.overrides"] = " ".join(overrides)
        params = flatten(run.plain)
        params.update({"data.classes": ",".join(data.classes), "data.train_clips": str(len(data.datasets["train"]))})
        client.set_tags(run.run_id, tags)
        client.log_params(run.run_id, params)
    return logger


def _checkpoints(cfg: Config, folder: Path) -> tuple:
    """``best.ckpt`` by the monitored metric, and ``last.ckpt``: the latest state, written at the same
    moments whether the metric improved or not (Lightning's ``save_last`` writes it only beside a new
    best, so a run resumed from it would go back to its best step and train those steps again)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    train = cfg.train
    # a training metric is there every step: check it every eval_interval steps (a val metric: after validation)
    every = min(train.eval_interval, train.steps) if train.monitor.startswith("train_") else None
    best = ModelCheckpoint(
        dirpath=folder,
        filename="best",
        monitor=train.monitor,
        mode=train.monitor_mode.value,
        save_top_k=1,
        auto_insert_metric_name=False,
        every_n_train_steps=every,
    )
    # after ``best`` at each save (Lightning keeps the order), so it holds the best score found so far;
    # always this one file (no last-v1.ckpt beside a last.ckpt it did not write itself)
    last = ModelCheckpoint(
        dirpath=folder, filename="last", save_top_k=1, every_n_train_steps=every, enable_version_counter=False
    )
    return best, last


def _trainer(run: _Run, logger, checkpoints: list, callbacks: list) -> L.Trainer:
    """``trainer.*`` passed through as they are; steps, validation, logging and outputs are the run's."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    train, kwargs = run.cfg.train, run.cfg.trainer.trainer_kwargs()
    if kwargs["precision"] == "bf16-mixed" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        kwargs["precision"] = "16-mixed"  # GPUs before Ampere: fp16 autocast with loss scaling
    return L.Trainer(
        **kwargs,
        max_steps=train.steps,
        val_check_interval=min(train.eval_interval, train.steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=logger,
        default_root_dir=run.out,
        callbacks=[*checkpoints, LearningRateMonitor(logging_interval="step"), *callbacks],
    )


def run_training(
    cfg: Config, out: Path, root: Path, overrides: list[str] | None = None, callbacks: list | None = None
) -> dict:
    """Train as configured; returns ``{"score": best monitored value, "run_id", "model"}``."""
    run = _Run(cfg, config_dict(cfg), out, root, tracking_uri(cfg.mlflow.tracking_uri, root), rank=global_rank())
    torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _resume_state(run)
    if run.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    data = _datamodule(cfg, root)
    model = cfg.model
    module = VideoClassifier(
        model.arch,
        model.variant.value,
        data.classes,
        model.dropout,
        run.plain["optim"],
        cfg.train.steps,
        cfg.train.label_smoothing,
        cfg.train.freeze_backbone,
        model.bn_momentum,
        cfg.train.channels_last,
    )
    # Other ranks get rank 0's weights when DDP wraps the model (it broadcasts them).
    init_note = "resumed" if run.resume_from is not None else "rank 0's"
    if run.resume_from is None and run.rank == 0:
        init_note = initialise(module.model, data.classes, cfg, run.uri)
    logger = _start_tracking(run, data, init_note, overrides)
    if run.rank == 0:
        write_text_atomic(out / "config.yaml", yaml.safe_dump(run.plain, sort_keys=False))
        run.write_record(finished=False)

    checkpoint, last = _checkpoints(cfg, out / "checkpoints")
    trainer = _trainer(run, logger, [checkpoint, last], callbacks or [])
    trainer.fit(module, datamodule=data, ckpt_path=run.resume_from)
    if not trainer.is_global_zero:
        return {"score": None, "run_id": None, "model": None}
    return _finish(run, checkpoint, data.classes)


def _best_score(checkpoint, best_path: str) -> float:
    """The best monitored value. Under ``ddp_spawn`` the training ran in child processes and only
    the best path came back to this one: the score is read from the checkpoint's callback state."""
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if Path(best_path).is_file():
        states = torch.load(best_path, map_location="cpu", weights_only=False).get("callbacks", {})
        for key, state in states.items():
            if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
                return float(state["best_model_score"])
    return float("nan")


def _finish(run: _Run, checkpoint, classes: list[str]) -> dict:
    """The best checkpoint as ``model.pt``, logged with its score; the run record marked finished."""
    best_path = checkpoint.best_model_path or str(run.out / "checkpoints" / "last.ckpt")
    best = VideoClassifier.load_from_checkpoint(best_path, map_location="cpu")
    model_file = save_checkpoint(best.model, run.out / "model.pt", class_names=classes, extra={"config": run.plain})
    score = _best_score(checkpoint, best_path)
    _log_model(run, model_file, len(classes), score)
    run.write_record(finished=True, **{f"best_{run.cfg.train.monitor}": score})
    return {"score": score, "run_id": run.run_id, "model": model_file}


def _log_model(run: _Run, model_file: Path, num_classes: int, score: float) -> None:
    import mlflow

    from movinet.tracking.clip_model import log_clip_model

    TrackingClient(run.uri).log_metrics(run.run_id, {f"best_{run.cfg.train.monitor}": score})
    size = run.cfg.data.transform.crop_size
    example = np.random.default_rng(0).random((1, 3, 2, size, size), dtype=np.float32)
    mlflow.set_tracking_uri(run.uri)
    with mlflow.start_run(run_id=run.run_id):
        retry(lambda: log_clip_model(model_file, num_classes, example))
        retry(lambda: mlflow.log_artifact(str(model_file), "checkpoint"))
