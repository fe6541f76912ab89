"""One training run: data, model initialisation, Lightning Trainer, MLflow tracking, resume, export.

Output folder (``models/<train.name>`` for the DVC stage, the job folder in a Hydra multirun):
``checkpoints/{best,last}.ckpt`` (Lightning), ``model.pt`` (our checkpoint of the best weights),
``config.yaml`` (the exact config) and ``run.json`` (MLflow run id, config fingerprint, best score).
An interrupted run with the same config resumes from ``last.ckpt`` into the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from movinet.config import resolve_path
from movinet.data.clips import ClipParams
from movinet.data.dataset import Augment
from movinet.data.datamodule import ClipDataModule
from movinet.files import write_json_atomic
from movinet.models import build, load_pretrained, save_checkpoint
from movinet.models.weights import read_checkpoint
from movinet.tracking.runs import flatten, run_tags
from movinet.tracking.store import ensure_experiment, tracking_uri, with_retry
from movinet.training.module import VideoClassifier

RUN_FILE = "run.json"


def clip_params(cfg: dict) -> ClipParams:
    data, model = cfg["data"], cfg["model"]
    frames = model.get("frames") or data["num_frames"]
    return ClipParams(
        num_frames=frames, frame_stride=data["frame_stride"], discard_threshold=data["discard_threshold"],
        offset=data.get("offset", 0), include_background=data["include_background"],
    )


def datamodule(cfg: dict, root: Path | None = None) -> ClipDataModule:
    data = cfg["data"]
    return ClipDataModule(
        resolve_path(data["frames_dir"], root), resolve_path(data["labels_dir"], root), clip_params(cfg),
        Augment(crop_size=data["crop_size"], scale=tuple(data["crop_scale"]), hflip=data["hflip"],
                no_flip=tuple(data["no_flip_classes"])),
        batch_size=data["batch_size"], num_workers=data["num_workers"],
        train_sampling=data["train_sampling"], train_hop=data["train_hop"],
        eval_clips_per_video=data["eval_clips_per_video"],
    )


def fingerprint(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def initialise(module: VideoClassifier, cfg: dict, uri: str) -> str:
    """Kinetics-600 weights (``model.pretrained``) with a new head, or a trained model to continue
    from (``train.init``: an MLflow model URI or a checkpoint of the same arch). Returns a note."""
    model, classes = module.model, module.class_names
    init, pretrained = cfg["train"].get("init"), cfg["model"].get("pretrained")
    if init:
        if str(init).startswith(("models:/", "runs:/")):
            from movinet.tracking.models import download_checkpoint

            path = download_checkpoint(str(init), uri)
        else:
            path = resolve_path(init)
        payload, name = read_checkpoint(path)
        arch, variant = payload.get("arch"), payload.get("variant")
        if (arch, variant) != (model.spec.arch, model.variant):
            raise ValueError(f"{init} is a MoViNet-{str(arch).upper()} {variant} model; this run builds "
                             f"MoViNet-{model.spec.arch.upper()} {model.variant} (set model={arch})")
        if payload.get("class_names") == classes:
            load_pretrained(model, payload)
        else:  # same backbone, other classes
            _load_all_but_last_layer(model, payload, payload["num_classes"])
        return f"continued from {init}"
    if pretrained:
        _load_all_but_last_layer(model, resolve_path(pretrained), 600)
        return f"Kinetics-600 weights from {pretrained}, new {len(classes)}-class head"
    return "from scratch"


def _load_all_but_last_layer(model, source, num_classes: int) -> None:
    """Load weights made for ``num_classes`` outputs, keeping the model's own last layer."""
    donor = load_pretrained(build(model.spec.arch, model.variant, num_classes), source)
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("classifier.logits")}
    model.load_state_dict(state, strict=False)


def _resume_state(out: Path, cfg: dict) -> tuple[str | None, Path | None]:
    """(MLflow run id, last.ckpt) of an interrupted run of the same config, else a clean folder."""
    record = out / RUN_FILE
    last = out / "checkpoints" / "last.ckpt"
    if record.is_file():
        info = json.loads(record.read_text())
        if (cfg["train"]["resume"] and not info.get("finished") and info.get("fingerprint") == fingerprint(cfg)
                and last.is_file()):
            return info["mlflow_run_id"], last
    if out.exists():
        shutil.rmtree(out)
    return None, None


def run_training(cfg: dict, out: Path, root: Path, overrides: list[str] | None = None,
                 callbacks: list | None = None) -> dict:
    """Train as configured; returns ``{"score": best monitored value, "run_id", "model"}``."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.entities import Param

    train, trainer_cfg = cfg["train"], cfg["trainer"]
    torch.set_num_threads(trainer_cfg["threads"])
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    run_id, ckpt_path = _resume_state(out, cfg)
    out.mkdir(parents=True, exist_ok=True)

    data = datamodule(cfg, root)
    data.setup()
    if not data.datasets["train"]:
        raise ValueError("no training clips: check data.num_frames / frame_stride against the video "
                         "lengths and data.discard_threshold against the labels")
    module = VideoClassifier(
        cfg["model"]["arch"], cfg["model"]["variant"], data.classes, cfg["model"]["dropout"], cfg["optim"],
        train["steps"], train["label_smoothing"], train["freeze_backbone"], cfg["model"]["bn_momentum"],
    )
    uri = tracking_uri(cfg["mlflow"]["tracking_uri"], root)
    init_note = initialise(module, cfg, uri) if ckpt_path is None else "resumed"

    ensure_experiment(cfg["mlflow"]["experiment"], uri)
    logger = MLFlowLogger(experiment_name=cfg["mlflow"]["experiment"], tracking_uri=uri,
                          run_name=train["name"], run_id=run_id)
    client, run_id = logger.experiment, logger.run_id
    if ckpt_path is None:
        tags = run_tags(root, resolve_path(cfg["data"]["frames_dir"], root),
                        resolve_path(cfg["data"]["labels_dir"], root), train["name"])
        tags["movinet.init"] = init_note
        if overrides:
            tags["movinet.overrides"] = " ".join(overrides)
        params = flatten(cfg)
        params["data.classes"] = ",".join(data.classes)
        params["data.train_clips"] = str(len(data.datasets["train"]))
        with_retry(lambda: [client.set_tag(run_id, k, v) for k, v in tags.items()])
        with_retry(lambda: client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()]))
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _write_record(out, {"mlflow_run_id": run_id, "fingerprint": fingerprint(cfg), "finished": False})

    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best", monitor=train["monitor"], mode=train["monitor_mode"],
        save_top_k=1, save_last=True, auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        max_steps=train["steps"], val_check_interval=min(train["eval_interval"], train["steps"]),
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
        accelerator=trainer_cfg["accelerator"], devices=trainer_cfg["devices"],
        precision=trainer_cfg["precision"], strategy=trainer_cfg["strategy"],
        gradient_clip_val=train["grad_clip"] or None, logger=logger, callbacks=[checkpoint, *(callbacks or [])],
        log_every_n_steps=max(1, min(10, train["eval_interval"] // 2)), enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)

    best_path = checkpoint.best_model_path or str(out / "checkpoints" / "last.ckpt")
    best = VideoClassifier.load_from_checkpoint(best_path, map_location="cpu")
    model_file = save_checkpoint(best.model, out / "model.pt", class_names=data.classes,
                                 extra={"config": cfg})
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    _log_model(client, uri, run_id, cfg, model_file, len(data.classes), score)
    _write_record(out, {"mlflow_run_id": run_id, "fingerprint": fingerprint(cfg), "finished": True,
                        f"best_{train['monitor']}": score})
    return {"score": score, "run_id": run_id, "model": model_file}


def _log_model(client, uri: str, run_id: str, cfg: dict, model_file: Path, num_classes: int,
               score: float) -> None:
    import mlflow

    from movinet.tracking.models import log_clip_model

    monitor = cfg["train"]["monitor"]
    with_retry(lambda: client.log_metric(run_id, f"best_{monitor}", score))
    size = cfg["data"]["crop_size"]
    example = np.random.default_rng(0).random((1, 3, 2, size, size), dtype=np.float32)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        with_retry(lambda: log_clip_model(model_file, num_classes, example))
        mlflow.log_artifact(str(model_file), "checkpoint")


def _write_record(out: Path, record: dict) -> None:
    write_json_atomic(out / RUN_FILE, record, sort_keys=False)
