"""The ingest stage: labels CSV + frame cache index -> per-frame labels, classes and splits.

Outputs (written to a temporary folder and renamed into place, so never half-written):
``frame_labels.csv`` (filename, frame, label; source frame numbers), ``splits.csv`` (filename,
split, start_frame, end_frame: one row per stretch of a video, see ``movinet.data.splits``; then
the stretch's majority label and labelled frames), ``classes.json`` and ``ingest_report.json``
(the summary, how each class was split, and every skipped row with its reason).

Given the clip parameters, ingest also counts the clips each split will have and refuses (before
anything is written) when val or test would have none: three stages earlier than evaluation would.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from movinet.data.clips import ClipParams
from movinet.data.extract import load_index
from movinet.data.labels import BACKGROUND, Labels, read_labels
from movinet.data.splits import SPLIT_NAMES, Stretch, assign_splits, videos_per_split
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
    split_by: str = "auto",
    clips: ClipParams | None = None,
) -> dict:
    """Writes ``out_dir``; with ``clips``, refuses when the val or test split would have no clip."""
    lengths = cached_videos(frames_dir)
    labels = read_labels(labels_csv, lengths, interpolation, on_error)
    stretches = assign_splits(labels, {v: n.frames for v, n in lengths.items()}, seed, fractions, split_by)
    summary = summarize(labels, stretches)
    with atomic_dir(out_dir) as tmp:
        _write_outputs(tmp, labels, stretches, summary)
        if clips is not None:
            summary["clips_per_split"] = _check_clips(frames_dir, tmp, clips, fractions)
            (tmp / REPORT).write_text(json.dumps(_report(summary, labels), indent=1))
    return summary


def _check_clips(frames_dir, labels_dir: Path, params: ClipParams, fractions) -> dict[str, int]:
    from movinet.data.dataset import build_clips

    counts = {s: len(build_clips(frames_dir, labels_dir, s, params)[0]) for s in SPLIT_NAMES}
    empty = [s for s, f in zip(SPLIT_NAMES, fractions) if f > 0 and counts[s] == 0]
    if empty:
        raise ValueError(
            f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would have no clip of "
            f"{params.num_frames} frames {params.frame_stride} apart (clips per split: {counts}); fixes: shorter "
            "clips (data.clips.num_frames, data.clips.frame_stride), a lower data.clips.discard_threshold, "
            "longer or more videos, or other data.labels.split_fractions"
        )
    return counts


def _report(summary: dict, labels: Labels) -> dict:
    skipped = [{"row": i.row, "file": i.file, "reason": i.message} for i in labels.skipped]
    return {**summary, "skipped_rows": skipped}


def _write_outputs(tmp: Path, labels: Labels, stretches: list[Stretch], summary: dict) -> None:
    with open(tmp / FRAME_LABELS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "frame", "label"])
        for video, per in sorted(labels.frames.items()):
            writer.writerows((video, frame, label) for frame, label in per.items())
    with open(tmp / SPLITS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "split", "start_frame", "end_frame", "majority_label", "labelled_frames"])
        for st in stretches:
            inside = Counter(lab for fr, lab in labels.frames[st.video].items() if st.start <= fr <= st.end)
            majority = max(sorted(inside), key=lambda lab: inside[lab]) if inside else ""
            writer.writerow([st.video, st.split, st.start, st.end, majority, sum(inside.values())])
    (tmp / CLASSES).write_text(json.dumps({"classes": labels.classes, "background": BACKGROUND}, indent=1))
    (tmp / REPORT).write_text(json.dumps(_report(summary, labels), indent=1))


def summarize(labels: Labels, stretches: list[Stretch]) -> dict:
    frames = Counter(label for per in labels.frames.values() for label in per.values())
    by_time = {st.video for st in stretches if st.start > 0}
    return {
        "classes": labels.classes,
        "frames_per_class": dict(sorted(frames.items())),
        "videos_per_split": videos_per_split(stretches),
        "videos_split_in_time": sorted(by_time),
        "videos": len(labels.frames),
    }


def read_frame_labels(labels_dir: str | Path) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    with open(Path(labels_dir) / FRAME_LABELS, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["filename"], {})[int(row["frame"])] = row["label"]
    return out


def read_splits(labels_dir: str | Path) -> list[Stretch]:
    with open(Path(labels_dir) / SPLITS, newline="") as f:
        rows = list(csv.DictReader(f))
    return [Stretch(r["filename"], r["split"], int(r["start_frame"]), int(r["end_frame"])) for r in rows]


def read_classes(labels_dir: str | Path) -> list[str]:
    return json.loads((Path(labels_dir) / CLASSES).read_text())["classes"]
