"""The ingest stage: labels CSV + frame cache index -> per-frame labels, classes and video splits.

Outputs (written to a temporary folder and renamed into place, so never half-written):
``frame_labels.csv`` (filename, frame, label; source frame numbers), ``splits.csv``
(filename, split, majority label, labelled frames), ``classes.json`` and ``ingest_report.json``
(every skipped row with its reason).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from movinet.data.extract import load_index
from movinet.data.labels import BACKGROUND, Labels, assign_splits, read_labels
from movinet.files import atomic_dir

FRAME_LABELS = "frame_labels.csv"
SPLITS = "splits.csv"
CLASSES = "classes.json"
REPORT = "ingest_report.json"


@dataclass(frozen=True)
class CachedLength:
    frames: int
    fps: float


def cached_videos(frames_dir: str | Path) -> dict[str, CachedLength]:
    """Source frame count and fps of every video in the frame cache (what CSV rows refer to)."""
    return {
        rel: CachedLength(e["source_frames"], e["source_fps"]) for rel, e in load_index(frames_dir)["videos"].items()
    }


def ingest_labels(
    labels_csv: str | Path,
    frames_dir: str | Path,
    out_dir: str | Path,
    interpolation: str = "none",
    on_error: str = "fail",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> dict:
    labels = read_labels(labels_csv, cached_videos(frames_dir), interpolation, on_error)
    splits = assign_splits(labels, seed, fractions)
    summary = summarize(labels, splits)
    with atomic_dir(out_dir) as tmp:
        _write_outputs(tmp, labels, splits, summary)
    return summary


def _write_outputs(tmp: Path, labels: Labels, splits: dict[str, str], summary: dict) -> None:
    with open(tmp / FRAME_LABELS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "frame", "label"])
        for video, per in sorted(labels.frames.items()):
            writer.writerows((video, frame, label) for frame, label in per.items())
    with open(tmp / SPLITS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "split", "majority_label", "labelled_frames"])
        for video, split in splits.items():
            writer.writerow([video, split, labels.majority(video), len(labels.frames[video])])
    (tmp / CLASSES).write_text(json.dumps({"classes": labels.classes, "background": BACKGROUND}, indent=1))
    (tmp / REPORT).write_text(
        json.dumps(
            {**summary, "skipped_rows": [{"row": i.row, "file": i.file, "reason": i.message} for i in labels.skipped]},
            indent=1,
        )
    )


def summarize(labels: Labels, splits: dict[str, str]) -> dict:
    frames = Counter(label for per in labels.frames.values() for label in per.values())
    videos = Counter(splits.values())
    return {
        "classes": labels.classes,
        "frames_per_class": dict(sorted(frames.items())),
        "videos_per_split": {s: videos.get(s, 0) for s in ("train", "val", "test")},
        "videos": len(labels.frames),
    }


def read_frame_labels(labels_dir: str | Path) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    with open(Path(labels_dir) / FRAME_LABELS, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["filename"], {})[int(row["frame"])] = row["label"]
    return out


def read_splits(labels_dir: str | Path) -> dict[str, str]:
    with open(Path(labels_dir) / SPLITS, newline="") as f:
        return {row["filename"]: row["split"] for row in csv.DictReader(f)}


def read_classes(labels_dir: str | Path) -> list[str]:
    return json.loads((Path(labels_dir) / CLASSES).read_text())["classes"]
