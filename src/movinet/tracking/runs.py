"""What every run records besides its metrics: flattened config, code and data versions, plots."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from movinet.files import write_json_atomic
from movinet.tracking.client import TrackingClient

PARENT_RUN_ENV = "MOVINET_PARENT_RUN_ID"
RUN_FILE = "run.json"  # beside a trained model: its MLflow run id, config fingerprint, whether it finished


def fingerprint(config: dict) -> str:
    """A short hash of a plain config: the same config, the same run (resume, ensemble parent)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_run_record(folder: Path, record: dict) -> None:
    write_json_atomic(folder / RUN_FILE, record, sort_keys=False)


def read_run_record(folder: Path) -> dict | None:
    path = folder / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def dataset_fingerprint(frames_dir: Path, labels_dir: Path) -> str:
    """Hash of the videos' contents and extraction parameters plus the ingested labels."""
    digest = hashlib.sha256()
    index = json.loads((frames_dir / "index.json").read_text())
    digest.update(json.dumps(index.get("params"), sort_keys=True).encode())
    for rel, entry in sorted(index["videos"].items()):
        digest.update(f"{rel}:{entry['sha256']}".encode())
    for name in ("frame_labels.csv", "splits.csv", "classes.json"):
        path = labels_dir / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_tags(root: Path, frames_dir: Path, labels_dir: Path, name: str) -> dict[str, str]:
    tags = {"movinet.name": name}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if (frames_dir / "index.json").is_file():
        tags["dataset.fingerprint"] = dataset_fingerprint(frames_dir, labels_dir)
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


def confusion_png(matrix, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i][j]), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_evaluation(
    client: TrackingClient,
    run_id: str,
    metrics: dict,
    matrix,
    class_names: list[str],
    per_class: list[dict],
    prefix: str = "test",
) -> None:
    """Metrics plus the confusion matrix (PNG + CSV) and the per-class table as artifacts."""
    client.log_metrics(run_id, metrics)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        confusion_png(matrix, class_names, folder / f"{prefix}_confusion_matrix.png", f"{prefix} confusion matrix")
        with open(folder / f"{prefix}_confusion_matrix.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["actual\\predicted", *class_names])
            for name, row in zip(class_names, matrix):
                writer.writerow([name, *[int(v) for v in row]])
        with open(folder / f"{prefix}_per_class.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(per_class[0]))
            writer.writeheader()
            writer.writerows(per_class)
        client.log_artifacts(run_id, str(folder), "evaluation")
