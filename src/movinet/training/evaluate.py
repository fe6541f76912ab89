"""Test-split evaluation of a trained model: metrics JSON and DVC plot data, logged to its run.

Writes ``metrics/<name>.json`` (``test_acc``, ``test_macro_f1``, ``test_top5`` with more than 5
classes, clip counts), ``plots/<name>/confusion.csv`` (one row per test clip: actual, predicted;
DVC's confusion template), ``plots/<name>/per_class.csv`` (precision, recall, support per class)
and ``reports/<name>/index.html`` (the test videos to look at, ``movinet.training.report``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from movinet.config import Config, to_config
from movinet.data.datamodule import ClipDataModule
from movinet.files import write_json_atomic, write_text_atomic
from movinet.models import optimize_for_inference
from movinet.models.device import resolve_device
from movinet.models.weights import load_checkpoint
from movinet.tracking.client import TrackingClient
from movinet.tracking.runs import log_evaluation, read_run_record
from movinet.tracking.store import tracking_uri
from movinet.training import report
from movinet.training.metrics import confusion_matrix, per_class_table, score


def test_split(cfg: Config, root: Path, classes: list[str]) -> ClipDataModule:
    """The data of ``cfg`` (a run's own config), checked against the classes the model predicts."""
    data = ClipDataModule.from_config(cfg, root)
    data.uint8_batches = False  # evaluation reads exact float clips, on any device
    data.setup()
    if data.classes != classes:
        raise ValueError(f"the model's classes {classes} differ from the data's {data.classes}")
    return data


@dataclass
class Predictions:
    """A model's logits on every test clip (the fixed, evenly spaced evaluation clips), with what the
    report needs besides: the model and the data."""

    model: Callable[[torch.Tensor], torch.Tensor]
    data: ClipDataModule
    logits: torch.Tensor
    labels: torch.Tensor

    @property
    def classes(self) -> list[str]:
        return self.data.classes


def evaluation_device(cfg: Config) -> torch.device:
    """The evaluation runs where the config trains: a GPU when ``trainer.accelerator`` asks for one
    (``gpu``, ``cuda`` or ``auto``) and one is visible, else the CPU."""
    wants_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    return resolve_device("auto" if wants_gpu else "cpu")


def predict_split(model_dir: Path, cfg: Config, root: Path) -> Predictions:
    model, payload = load_checkpoint(model_dir / "model.pt")
    device = evaluation_device(cfg)
    fast = optimize_for_inference(model.to(device))
    try:
        data = test_split(cfg, root, payload["class_names"])
    except ValueError as exc:
        raise ValueError(f"{model_dir}: {exc}") from None
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in data.test_dataloader():
            logits.append(fast(x.to(device)).float().cpu())
            labels.append(y)
    if not labels:
        raise ValueError("the test split has no clips")
    return Predictions(fast.cpu(), data, torch.cat(logits), torch.cat(labels))


def write_report(name: str, predictions: Predictions, metrics: dict, reports_dir: Path) -> Path:
    """``reports/<name>/index.html``: the test videos, worst first (``movinet.training.report``)."""
    results = report.video_results(predictions.data, predictions.logits, predictions.classes, predictions.model)
    title = f"{name}: {len(results)} test videos"
    return report.write_report(reports_dir / name / "index.html", title, predictions.classes, results, metrics)


def write_evaluation(
    name: str,
    metrics: dict,
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    metrics_dir: Path,
    plots_dir: Path,
) -> None:
    """``metrics/<name>.json`` and ``plots/<name>/{confusion,per_class}.csv``, each written atomically."""
    write_json_atomic(metrics_dir / f"{name}.json", metrics, sort_keys=False)
    folder = plots_dir / name
    predicted = logits.argmax(1)
    rows = "actual,predicted\n" + "".join(
        f"{classes[a]},{classes[p]}\n" for a, p in zip(labels.tolist(), predicted.tolist())
    )
    write_text_atomic(folder / "confusion.csv", rows)
    table = per_class_table(logits, labels, classes)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(folder / "per_class.csv", text.getvalue())


def log_to_run(
    client: TrackingClient,
    run_id: str,
    metrics: dict,
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    report_file: Path | None = None,
) -> None:
    """The float metrics, the confusion matrix, the per-class table and the report, into the model's run."""
    floats = {k: v for k, v in metrics.items() if isinstance(v, float)}
    matrix = confusion_matrix(logits, labels, len(classes))
    log_evaluation(client, run_id, floats, matrix, classes, per_class_table(logits, labels, classes))
    if report_file is not None:
        client.log_artifact(run_id, str(report_file), "evaluation")


def evaluate(model_dir: Path, name: str, root: Path, metrics_dir: Path, plots_dir: Path, reports_dir: Path) -> dict:
    cfg = to_config(yaml.safe_load((model_dir / "config.yaml").read_text()))
    predictions = predict_split(model_dir, cfg, root)
    logits, labels, classes = predictions.logits, predictions.labels, predictions.classes
    metrics = score(logits, labels, len(classes))
    write_evaluation(name, metrics, logits, labels, classes, metrics_dir, plots_dir)
    page = write_report(name, predictions, metrics, reports_dir)
    record = read_run_record(model_dir)
    if record is not None:
        client = TrackingClient(tracking_uri(cfg.mlflow.tracking_uri, root))
        log_to_run(client, record["mlflow_run_id"], metrics, logits, labels, classes, page)
    return metrics
