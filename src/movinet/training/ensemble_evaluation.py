"""Stage evaluate_ensemble: the members and the ensemble (averaged logits) on the base model's test
clips, each member on its own frames; metrics, plots and the gain over the best member go to
``metrics/<name>.json`` and to the ensemble's MLflow parent run."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from movinet.config import Config, config_dict
from movinet.files import write_json_atomic, write_text_atomic
from movinet.inference.ensemble import ENSEMBLE_FILE, TemporalEnsemble
from movinet.models.weights import load_checkpoint
from movinet.tracking.client import TrackingClient
from movinet.tracking.runs import RUN_FILE, fingerprint, read_run_record, write_run_record
from movinet.tracking.store import tracking_uri
from movinet.training.ensemble import ensemble_dir, member_dir
from movinet.training.evaluate import Predictions, log_to_run, test_split, write_evaluation, write_report
from movinet.training.metrics import score


def members_parent(cfg: Config, root: Path, client: TrackingClient) -> str:
    """The parent run the trained members hang under, read from their own runs (not looked up by
    config, which may have changed in ways that did not retrain them)."""
    parents = set()
    for offset in cfg.ensemble.offsets:
        record = read_run_record(member_dir(cfg, root, offset))
        if record is None:
            raise FileNotFoundError(
                f"{member_dir(cfg, root, offset) / RUN_FILE} is missing: train the member "
                "first (dvc repro train_member)"
            )
        parents.add(client.get_run(record["mlflow_run_id"]).data.tags.get("mlflow.parentRunId"))
    if len(parents) != 1 or None in parents:
        raise ValueError(
            f"the members of {cfg.ensemble.name!r} do not share one parent run "
            f"({sorted(map(str, parents))}): retrain them together"
        )
    return parents.pop()


def member_logits(cfg: Config, root: Path) -> tuple[list[torch.Tensor], Predictions]:
    """Each member's logits on its own frames of the base model's test clips; and the ensemble's
    predictions (averaged logits) with the ensemble and the data, for the report."""
    from movinet.models import optimize_for_inference

    offsets, members, classes = list(cfg.ensemble.offsets), [], None
    for offset in offsets:
        model, payload = load_checkpoint(member_dir(cfg, root, offset) / "model.pt")
        members.append(optimize_for_inference(model))
        classes = classes or payload["class_names"]
    ensemble = TemporalEnsemble(members, offsets, len(offsets))
    data = test_split(cfg, root, classes)
    outputs, labels = [[] for _ in offsets], []
    with torch.inference_mode():
        for x, y in data.test_dataloader():
            for k, logits in enumerate(ensemble.member_logits(x)):
                outputs[k].append(logits)
            labels.append(y)
    if not labels:
        raise ValueError("the test split has no clips")
    per_member = [torch.cat(o) for o in outputs]
    return per_member, Predictions(ensemble, data, torch.stack(per_member).mean(0), torch.cat(labels))


def evaluate_ensemble(cfg: Config, root: Path, metrics_dir: Path, plots_dir: Path, reports_dir: Path) -> dict:
    offsets, name = list(cfg.ensemble.offsets), cfg.ensemble.name
    per_member, predictions = member_logits(cfg, root)
    logits, labels, classes = predictions.logits, predictions.labels, predictions.classes
    metrics = score(logits, labels, len(classes))
    metrics["members"] = {f"m{o}": score(m, labels, len(classes)) for o, m in zip(offsets, per_member)}
    metrics["gain_over_best_member"] = metrics["test_acc"] - max(m["test_acc"] for m in metrics["members"].values())
    write_evaluation(name, metrics, logits, labels, classes, metrics_dir, plots_dir)
    page = write_report(name, predictions, metrics, reports_dir)

    out, plain = ensemble_dir(cfg, root), config_dict(cfg)
    client = TrackingClient(tracking_uri(cfg.mlflow.tracking_uri, root))
    run_id = members_parent(cfg, root, client)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(plain, sort_keys=False))
    spec = {
        "members": [f"members/m{o}/model.pt" for o in offsets],
        "offsets": offsets,
        "stride": len(offsets),
        "class_names": classes,
    }
    write_json_atomic(out / ENSEMBLE_FILE, spec, sort_keys=False)
    flat = dict(metrics)
    for member, values in metrics["members"].items():
        flat.update({f"{member}_{k}": v for k, v in values.items()})
    log_to_run(client, run_id, flat, logits, labels, classes, page)
    client.set_terminated(run_id, "FINISHED")
    write_run_record(out, {"mlflow_run_id": run_id, "fingerprint": fingerprint(plain), "finished": True})
    return metrics
