"""The temporal ensemble stages: train members at a lower frame rate, evaluate them together.

With the base clip of T frames ``s`` apart and ``n = len(ensemble.offsets)`` members, member ``k``
trains on clips of T/n frames ``n*s`` apart starting ``offsets[k]*s`` frames in: the same duration
as the base clip, on alternating frames, so the members see disjoint frames and together cost one
base model. Each member is an MLflow child run under one ensemble parent run, which then gets the
members' and the ensemble's test metrics and the gain over the best member.

Layout: ``models/<name>/members/m<offset>/`` (each a normal training output) and
``models/<name>/{ensemble.json, config.yaml, run.json}`` written by the evaluation.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
import yaml

from movinet.files import write_json_atomic, write_text_atomic
from movinet.models.weights import load_checkpoint
from movinet.tracking.register import ENSEMBLE_FILE
from movinet.tracking.runs import PARENT_RUN_ENV, flatten
from movinet.tracking.store import ensure_experiment, tracking_uri, with_retry
from movinet.training.evaluate import metrics_of, per_class_table, write_evaluation
from movinet.training.run import RUN_FILE, _write_record, datamodule, fingerprint, run_training


def ensemble_dir(cfg: dict, root: Path) -> Path:
    return root / "models" / cfg["ensemble"]["name"]


def member_dir(cfg: dict, root: Path, offset: int) -> Path:
    return ensemble_dir(cfg, root) / "members" / f"m{offset}"


def member_config(cfg: dict, offset: int) -> dict:
    """The base config turned into member ``offset``'s: fewer frames, a larger stride, an offset."""
    offsets = list(cfg["ensemble"]["offsets"])
    if offset not in offsets:
        raise ValueError(f"offset {offset} is not one of ensemble.offsets {offsets}")
    n = len(offsets)
    out = copy.deepcopy(cfg)
    data, model = out["data"], out["model"]
    frames = model.get("frames") or data["num_frames"]
    if frames % n:
        raise ValueError(f"{frames} frames per clip do not split into {n} members (ensemble.offsets)")
    data["num_frames"] = frames // n
    if model.get("frames"):
        model["frames"] = frames // n
    data["offset"] = offset * data["frame_stride"]
    data["frame_stride"] = data["frame_stride"] * n
    out["train"]["name"] = f"{cfg['ensemble']['name']}_m{offset}"
    return out


def parent_run(cfg: dict, root: Path) -> str:
    """The ensemble's MLflow parent run for this config: the open one every member finds again
    (made by the first)."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg["mlflow"]["tracking_uri"], root)
    experiment = ensure_experiment(cfg["mlflow"]["experiment"], uri)
    client = MlflowClient(uri)
    key = fingerprint({k: v for k, v in cfg.items() if k != "register"})
    query = f"tags.`movinet.ensemble` = '{key}' and attributes.status != 'FINISHED'"
    found = with_retry(lambda: client.search_runs([experiment], query, max_results=1,
                                                  order_by=["attributes.start_time DESC"]))
    if found:
        return found[0].info.run_id
    run = with_retry(lambda: client.create_run(experiment, run_name=cfg["ensemble"]["name"],
                                               tags={"movinet.ensemble": key, "movinet.name": cfg["ensemble"]["name"]}))
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith("register.")}
    from mlflow.entities import Param

    with_retry(lambda: client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()]))
    return run.info.run_id


def train_member(cfg: dict, root: Path, offset: int) -> dict:
    member = member_config(cfg, offset)
    os.environ[PARENT_RUN_ENV] = parent_run(cfg, root)
    try:
        return run_training(member, member_dir(cfg, root, offset), root)
    finally:
        os.environ.pop(PARENT_RUN_ENV, None)


def members_parent(cfg: dict, root: Path) -> str:
    """The parent run the trained members hang under, read from their own runs (not looked up by
    config, which may have changed in ways that did not retrain them)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(cfg["mlflow"]["tracking_uri"], root))
    parents = set()
    for offset in cfg["ensemble"]["offsets"]:
        record = member_dir(cfg, root, offset) / RUN_FILE
        if not record.is_file():
            raise FileNotFoundError(f"{record} is missing: train the member first (dvc repro train_member)")
        run = with_retry(lambda: client.get_run(json.loads(record.read_text())["mlflow_run_id"]))
        parents.add(run.data.tags.get("mlflow.parentRunId"))
    if len(parents) != 1 or None in parents:
        raise ValueError(f"the members of {cfg['ensemble']['name']!r} do not share one parent run "
                         f"({sorted(map(str, parents))}): retrain them together")
    return parents.pop()


def evaluate_ensemble(cfg: dict, root: Path, metrics_dir: Path, plots_dir: Path) -> dict:
    """Members and ensemble on the base model's test clips (each member on its own frames)."""
    from movinet.inference.ensemble import TemporalEnsemble
    from movinet.models import optimize_for_inference

    offsets, name = list(cfg["ensemble"]["offsets"]), cfg["ensemble"]["name"]
    members, classes = [], None
    for offset in offsets:
        model, payload = load_checkpoint(member_dir(cfg, root, offset) / "model.pt")
        members.append(optimize_for_inference(model))
        classes = classes or payload["class_names"]
    ensemble = TemporalEnsemble(members, offsets, len(offsets))
    data = datamodule(cfg, root)
    data.setup()
    if data.classes != classes:
        raise ValueError(f"the members' classes {classes} differ from the data's {data.classes}")
    outputs, labels = [[] for _ in offsets], []
    with torch.inference_mode():
        for x, y in data.test_dataloader():
            for k, logits in enumerate(ensemble.member_logits(x)):
                outputs[k].append(logits)
            labels.append(y)
    if not labels:
        raise ValueError("the test split has no clips")
    labels_t = torch.cat(labels)
    member_logits = [torch.cat(o) for o in outputs]
    logits = torch.stack(member_logits).mean(0)
    metrics = metrics_of(logits, labels_t, classes)
    metrics["members"] = {f"m{o}": metrics_of(m, labels_t, classes) for o, m in zip(offsets, member_logits)}
    best = max(m["test_acc"] for m in metrics["members"].values())
    metrics["gain_over_best_member"] = metrics["test_acc"] - best
    write_evaluation(name, metrics, logits, labels_t, classes, metrics_dir, plots_dir)

    out = ensemble_dir(cfg, root)
    run_id = members_parent(cfg, root)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    spec = {"members": [f"members/m{o}/model.pt" for o in offsets], "offsets": offsets, "stride": len(offsets),
            "class_names": classes}
    write_json_atomic(out / ENSEMBLE_FILE, spec, sort_keys=False)
    _log_to_parent(cfg, root, run_id, metrics, logits, labels_t, classes)
    _write_record(out, {"mlflow_run_id": run_id, "fingerprint": fingerprint(cfg), "finished": True})
    return metrics


def _log_to_parent(cfg, root, run_id, metrics, logits, labels, classes) -> None:
    from mlflow.tracking import MlflowClient
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from movinet.tracking.runs import log_evaluation

    client = MlflowClient(tracking_uri(cfg["mlflow"]["tracking_uri"], root))
    flat = {k: v for k, v in metrics.items() if isinstance(v, float)}
    for member, values in metrics["members"].items():
        flat.update({f"{member}_{k}": v for k, v in values.items() if isinstance(v, float)})
    matrix = multiclass_confusion_matrix(logits, labels, len(classes)).tolist()
    log_evaluation(client, run_id, flat, matrix, classes, per_class_table(logits, labels, classes))
    with_retry(lambda: client.set_terminated(run_id, "FINISHED"))
