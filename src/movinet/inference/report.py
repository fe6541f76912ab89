"""Predictions written out: the per-frame timeline as CSV and as a plot."""

from __future__ import annotations

import csv
from pathlib import Path

from movinet.files import atomic_path
from movinet.inference.predictor import Prediction


def write_timeline_csv(predictions: list[Prediction], path: str | Path) -> Path:
    """One row per (video, frame): time, top label and score, then each class's probability."""
    path = Path(path)
    classes = predictions[0].class_names if predictions else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "frame", "time", "label", "score", *classes])
        for pred in predictions:
            for row in pred.timeline:
                probs = row["probabilities"]
                best = int(probs.argmax())
                time = "" if row["time"] is None else f"{row['time']:.3f}"
                writer.writerow(
                    [pred.video, row["frame"], time, classes[best], f"{probs[best]:.4f}", *[f"{p:.4f}" for p in probs]]
                )
    return path


def plot_timeline(predictions: list[Prediction], path: str | Path, top: int = 5) -> Path:
    """Probability over time of each video's ``top`` classes, one panel per video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [p for p in predictions if p.timeline]
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(9, 2.6 * max(1, len(shown))), squeeze=False)
    for ax, pred in zip(axes[:, 0], shown):
        times = [r["time"] if r["time"] is not None else r["frame"] for r in pred.timeline]
        probs = np.stack([r["probabilities"] for r in pred.timeline])
        for c in np.argsort(-probs.mean(0))[:top]:
            ax.plot(times, probs[:, c], label=pred.class_names[c])
        ax.set_ylim(0, 1)
        ax.set_title(f"{Path(pred.video).name}: {pred.label} ({pred.probabilities.max():.2f})", fontsize=10)
        ax.set_ylabel("probability")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
