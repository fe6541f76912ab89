"""The labels CSV (Datature-style classification CSV): parse, validate, interpolate, split.

Columns: ``filename,label`` plus one way of saying which frames a row labels:

* ``frame``: one source frame (a keyframe);
* ``start_frame,end_frame``: an inclusive range;
* ``timestamp``: seconds from the start (frame ``round(timestamp * fps)``), a keyframe too;
* none of them (empty): the whole video.

An optional ``split`` column (train/val/test) fixes a video's split. ``background`` is a reserved
label: frames known to show no class, unlike unlabelled frames. Sparse keyframes are filled by
``interpolation``: ``none``, ``hold`` (between two keyframes, the earlier label until the next
keyframe) or ``nearest`` (same label: fill; different labels: switch at the midpoint).

Every problem names the CSV row (as a spreadsheet shows it: the header is row 1) and the file.
``on_error="fail"`` raises with all problems; ``"skip"`` drops the bad rows and reports them.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

BACKGROUND = "background"
POSITION_COLUMNS = ("frame", "start_frame", "end_frame", "timestamp")
KNOWN_COLUMNS = ("filename", "label", *POSITION_COLUMNS, "split")
INTERPOLATIONS = ("none", "hold", "nearest")
SPLITS = ("train", "val", "test")


class VideoLength(Protocol):
    frames: int
    fps: float


@dataclass(frozen=True)
class LabelIssue:
    row: int | None  # CSV row number (header = 1); None for file-level problems
    file: str | None
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{where}: {self.file + ': ' if self.file else ''}{self.message}"


class LabelError(ValueError):
    def __init__(self, source: str, issues: list[LabelIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {source}: {issue}" for issue in issues)
        super().__init__(f"{len(issues)} problem(s) in {source}:\n{lines}")


@dataclass
class Labels:
    frames: dict[str, dict[int, str]]  # video -> {source frame -> label}
    given_splits: dict[str, str]
    skipped: list[LabelIssue] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """The user's classes, sorted (``background`` is not a class)."""
        return sorted({lab for per in self.frames.values() for lab in per.values()} - {BACKGROUND})

    def majority(self, video: str) -> str | None:
        counts = Counter(self.frames.get(video, {}).values())
        return max(sorted(counts), key=lambda lab: counts[lab]) if counts else None


@dataclass
class _Row:
    number: int
    file: str
    label: str
    frames: list[int] | None  # None: the whole video
    keyframe: bool
    split: str | None


def read_labels(
    csv_path: str | Path,
    videos: Mapping[str, VideoLength],
    interpolation: str = "none",
    on_error: str = "fail",
) -> Labels:
    """Parse and validate ``csv_path`` against ``videos`` (relative path -> frames, fps)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    source = str(csv_path)
    issues: list[LabelIssue] = []
    rows: list[_Row] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        unknown = [h for h in header if h not in KNOWN_COLUMNS]
        missing = [h for h in ("filename", "label") if h not in header]
        if unknown or missing:
            problems = [f"unknown column {h!r} (known: {', '.join(KNOWN_COLUMNS)})" for h in unknown]
            problems += [f"missing column {h!r}" for h in missing]
            raise LabelError(source, [LabelIssue(1, None, p) for p in problems])
        for number, raw in enumerate(reader, start=2):
            values = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            row = _parse_row(number, values, videos, issues)
            if row is not None:
                rows.append(row)

    labels = _assign(rows, videos, issues)
    issues.sort(key=lambda issue: issue.row or 0)
    if on_error == "fail" and issues:
        raise LabelError(source, issues)
    labels.skipped = issues
    _interpolate(labels, rows, interpolation)
    if not labels.classes:
        raise LabelError(
            source,
            [
                *issues,
                LabelIssue(None, None, f"no classes: no row labels a frame with a class other than {BACKGROUND!r}"),
            ],
        )
    return labels


def _parse_row(number: int, values: dict, videos: Mapping[str, VideoLength], issues: list[LabelIssue]) -> _Row | None:
    file, label = values["filename"], values["label"]  # both columns are there: the header was checked

    def bad(message: str) -> None:
        issues.append(LabelIssue(number, file or None, message))

    if not file:
        return bad("empty filename")
    if file not in videos:
        return bad(f"unknown video {file!r} (not among the videos, or it could not be decoded)")
    if not label:
        return bad("empty label")
    split = values.get("split") or None
    if split is not None and split not in SPLITS:
        return bad(f"split {split!r} is not one of {', '.join(SPLITS)}")
    length = videos[file].frames
    given = {c for c in POSITION_COLUMNS if values.get(c)}
    if given and given not in ({"frame"}, {"timestamp"}, {"start_frame", "end_frame"}):
        return bad(f"give one of: frame | start_frame and end_frame | timestamp (got {', '.join(sorted(given))})")

    def frame_number(column: str) -> int | None:
        text = values[column]
        try:
            value = int(text)
        except ValueError:
            return bad(f"{column} {text!r} is not a whole number")
        if value < 0:
            return bad(f"negative {column} {value}")
        if value >= length:
            return bad(f"{column} {value} is past the end (the video has {length} frames, 0..{length - 1})")
        return value

    if not given:
        return _Row(number, file, label, None, False, split)
    if given == {"frame"}:
        frame = frame_number("frame")
        return None if frame is None else _Row(number, file, label, [frame], True, split)
    if given == {"timestamp"}:
        frame = _timestamp_frame(values["timestamp"], videos[file], bad)
        return None if frame is None else _Row(number, file, label, [frame], True, split)
    start, end = frame_number("start_frame"), frame_number("end_frame")
    if start is None or end is None:
        return None
    if end < start:
        return bad(f"end_frame {end} is before start_frame {start}")
    return _Row(number, file, label, list(range(start, end + 1)), False, split)


def _timestamp_frame(text: str, video: VideoLength, bad) -> int | None:
    """The frame at ``text`` seconds, ``round(t * fps)``; a bad value is reported through ``bad``."""
    try:
        seconds = float(text)
    except ValueError:
        return bad(f"timestamp {text!r} is not a number")
    if not math.isfinite(seconds):  # nan, inf, 1e400
        return bad(f"timestamp {text!r} is not a finite number of seconds")
    if seconds < 0:
        return bad(f"negative timestamp {seconds}")
    frame = round(seconds * video.fps)
    if frame >= video.frames:
        return bad(
            f"timestamp {seconds}s is past the end (the video lasts {video.frames / video.fps:.3f}s, "
            f"{video.frames} frames)"
        )
    return frame


def _assign(rows: list[_Row], videos: Mapping[str, VideoLength], issues: list[LabelIssue]) -> Labels:
    frames: dict[str, dict[int, str]] = defaultdict(dict)
    owner: dict[tuple[str, int], int] = {}
    splits: dict[str, tuple[str, int]] = {}
    for row in rows:
        covered = row.frames if row.frames is not None else range(videos[row.file].frames)
        per = frames[row.file]
        clash = next((f for f in covered if per.get(f, row.label) != row.label), None)
        if clash is not None:
            issues.append(
                LabelIssue(
                    row.number,
                    row.file,
                    (
                        f"conflicting labels on frame {clash}: {row.label!r} here, {per[clash]!r} "
                        f"from row {owner[(row.file, clash)]}"
                    ),
                )
            )
            continue
        if row.split is not None:
            earlier = splits.get(row.file)
            if earlier is not None and earlier[0] != row.split:
                issues.append(
                    LabelIssue(
                        row.number,
                        row.file,
                        (f"split {row.split!r} conflicts with {earlier[0]!r} from row {earlier[1]}"),
                    )
                )
                continue
            splits[row.file] = (row.split, row.number)
        for f in covered:
            if f not in per:
                per[f] = row.label
                owner[(row.file, f)] = row.number
    return Labels({k: dict(sorted(v.items())) for k, v in frames.items() if v}, {k: v[0] for k, v in splits.items()})


def _interpolate(labels: Labels, rows: list[_Row], mode: str) -> None:
    if mode == "none":
        return
    keyframes: dict[str, dict[int, str]] = defaultdict(dict)
    skipped_rows = {issue.row for issue in labels.skipped}
    for row in rows:
        if row.keyframe and row.number not in skipped_rows:
            keyframes[row.file][row.frames[0]] = row.label
    for video, keys in keyframes.items():
        per = labels.frames[video]
        points = sorted(keys.items())
        for (a, la), (b, lb) in zip(points, points[1:]):
            for f in range(a + 1, b):
                if f in per:
                    continue  # explicit labels (ranges, whole-video) win over interpolation
                if la == lb or mode == "hold" or f - a <= b - f:
                    per[f] = la
                else:
                    per[f] = lb
        labels.frames[video] = dict(sorted(per.items()))
