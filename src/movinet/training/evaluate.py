"""Test-split evaluation of a trained model: metrics JSON and DVC plot data, logged to its run.

Writes ``metrics/<name>.json`` (``test_acc``, ``test_top5`` with 5+ classes, ``test_macro_f1``,
clip counts), ``plots/<name>/confusion.csv`` (one row per test clip: actual, predicted; DVC's
confusion template) and ``plots/<name>/per_class.csv`` (precision, recall, support per class).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from movinet.files import write_json_atomic, write_text_atomic
from movinet.models import optimize_for_inference
from movinet.models.weights import load_checkpoint
from movinet.training.run import RUN_FILE, datamodule


def predict_split(model_dir: Path, cfg: dict, root: Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Logits and labels of every clip of ``split`` (the fixed, evenly spaced evaluation clips)."""
    model, payload = load_checkpoint(model_dir / "model.pt")
    fast = optimize_for_inference(model)
    data = datamodule(cfg, root)
    data.setup()
    if data.classes != payload["class_names"]:
        raise ValueError(f"{model_dir}: the model's classes {payload['class_names']} differ from the "
                         f"data's {data.classes}")
    loader = {"test": data.test_dataloader, "val": data.val_dataloader}[split]()
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(fast(x))
            labels.append(y)
    if not labels:
        raise ValueError(f"the {split} split has no clips")
    return torch.cat(logits), torch.cat(labels), data.classes


def metrics_of(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], prefix: str = "test") -> dict:
    n = len(classes)
    out = {
        f"{prefix}_acc": multiclass_accuracy(logits, labels, n, average="micro").item(),
        f"{prefix}_macro_f1": multiclass_f1_score(logits, labels, n, average="macro").item(),
        f"{prefix}_clips": int(len(labels)),
    }
    if n >= 5:
        out[f"{prefix}_top5"] = multiclass_accuracy(logits, labels, n, top_k=5, average="micro").item()
    return out


def per_class_table(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> list[dict]:
    n = len(classes)
    precision = multiclass_precision(logits, labels, n, average=None)
    recall = multiclass_recall(logits, labels, n, average=None)
    support = torch.bincount(labels, minlength=n)
    return [{"class": c, "precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for c, p, r, s in zip(classes, precision, recall, support)]


def write_evaluation(name: str, metrics: dict, logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                     metrics_dir: Path, plots_dir: Path) -> None:
    """``metrics/<name>.json`` and ``plots/<name>/{confusion,per_class}.csv``, each written atomically."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics_dir / f"{name}.json", metrics, sort_keys=False)
    folder = plots_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    predicted = logits.argmax(1)
    rows = "actual,predicted\n" + "".join(f"{classes[a]},{classes[p]}\n" for a, p in zip(labels.tolist(), predicted.tolist()))
    write_text_atomic(folder / "confusion.csv", rows)
    table = per_class_table(logits, labels, classes)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(folder / "per_class.csv", text.getvalue())


def evaluate(model_dir: Path, name: str, root: Path, metrics_dir: Path, plots_dir: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    logits, labels, classes = predict_split(model_dir, cfg, root)
    metrics = metrics_of(logits, labels, classes)
    write_evaluation(name, metrics, logits, labels, classes, metrics_dir, plots_dir)

    record = model_dir / RUN_FILE
    if record.is_file():
        from mlflow.tracking import MlflowClient

        from movinet.tracking.runs import log_evaluation
        from movinet.tracking.store import tracking_uri

        run_id = json.loads(record.read_text())["mlflow_run_id"]
        client = MlflowClient(tracking_uri(cfg["mlflow"]["tracking_uri"], root))
        matrix = multiclass_confusion_matrix(logits, labels, len(classes)).tolist()
        log_evaluation(client, run_id, {k: v for k, v in metrics.items() if not k.endswith("clips")},
                       matrix, classes, per_class_table(logits, labels, classes))
    return metrics
