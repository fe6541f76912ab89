"""The classification metrics, defined once: training logs them per split and evaluation writes them.

Top-1 accuracy (micro), macro F1, and top-5 accuracy only where 5 < the number of classes (with 5
classes or fewer it is 1.0 by construction). Evaluation adds per-class precision, recall and support
and the confusion matrix. All are torchmetrics with explicit averaging.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_precision,
    multiclass_recall,
)

TOP_K = 5


def classification_metrics(num_classes: int) -> MetricCollection:
    """``acc``, ``macro_f1`` and, with more than ``TOP_K`` classes, ``top5``."""
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes > TOP_K:
        metrics[f"top{TOP_K}"] = MulticlassAccuracy(num_classes, top_k=TOP_K, average="micro")
    return MetricCollection(metrics)


def score(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, prefix: str = "test") -> dict:
    """The metrics of a whole split, ``{prefix}_acc`` ..., plus its clip count ``{prefix}_clips``."""
    values = classification_metrics(num_classes)(logits, labels)
    out = {
        f"{prefix}_acc": values["acc"].item(),
        f"{prefix}_macro_f1": values["macro_f1"].item(),
        f"{prefix}_clips": int(len(labels)),
    }
    if f"top{TOP_K}" in values:
        out[f"{prefix}_top{TOP_K}"] = values[f"top{TOP_K}"].item()
    return out


def per_class_table(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> list[dict]:
    n = len(classes)
    precision = multiclass_precision(logits, labels, n, average=None)
    recall = multiclass_recall(logits, labels, n, average=None)
    support = torch.bincount(labels, minlength=n)
    return [
        {"class": c, "precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
        for c, p, r, s in zip(classes, precision, recall, support)
    ]


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Rows: actual class; columns: predicted."""
    return multiclass_confusion_matrix(logits, labels, num_classes).tolist()
