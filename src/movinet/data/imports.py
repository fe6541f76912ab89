"""Labels from the tools people already use, turned into our labels CSV (``movinet labels import``).

* **Class folders** (the UCF101 / HMDB51 layout, ``VIDEOS/<class>/<video>``): one whole-video row
  per video, labelled with its folder's name.
* **Label Studio** JSON or JSON-MIN export of a video project: ``<TimelineLabels>`` regions
  (``value.ranges``: frame numbers counted from 1, end included, at the ``<Video frameRate>`` the
  project was labelled at) become frame ranges; ``<Choices>`` on the video become whole-video rows.
  A file uploaded to Label Studio is named ``<8 hex>-<name>``: with ``videos`` given, the name is
  matched against the folder with and without that prefix.
* **CVAT** "CVAT for images 1.1" XML of a video task: each ``<image name="frame_000123">`` with a
  ``<tag label=...>`` is that frame's label (CVAT numbers the video's frames from 0); runs of
  consecutive frames with one label become ranges. The video is ``<meta><task><source>``. "CVAT for
  video 1.1" carries no tags (CVAT's own docs), so it is refused with that advice.

Every problem names the file and the element (task, result, image) it is in.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from movinet.files import write_text_atomic

COLUMNS = ("filename", "frame", "start_frame", "end_frame", "label")
JSON_MIN_META = ("annotator", "created_at", "updated_at")  # JSON-MIN's own keys beside data and controls
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio's name for an uploaded file


class ExportFormatError(ValueError):
    """A malformed or unknown export: the message names the file and the element."""


@dataclass(frozen=True)
class Row:
    filename: str
    label: str
    frame: int | None = None  # one source frame
    start: int | None = None  # or a range, inclusive
    end: int | None = None

    def cells(self) -> list:
        return [self.filename, self.frame, self.start, self.end, self.label]


def write_csv(rows: list[Row], path: str | Path) -> Path:
    """The labels CSV (atomically): ``filename,frame,start_frame,end_frame,label``."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(["" if c is None else c for c in row.cells()] for row in rows)
    write_text_atomic(Path(path), text.getvalue())
    return Path(path)


def from_folders(videos_dir: str | Path) -> list[Row]:
    from movinet.data.video import list_videos

    videos = list_videos(videos_dir)
    loose = [rel for rel in videos if "/" not in rel]
    if loose:
        raise ExportFormatError(
            f"{videos_dir}: {', '.join(loose[:5])} not inside a class folder (VIDEOS/<class>/<video>)"
        )
    return [Row(rel, rel.split("/")[0]) for rel in sorted(videos)]


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportFormatError(f"{path}: not JSON ({exc})") from None


def from_label_studio(
    path: str | Path, videos_dir: str | Path | None = None, frame_rate: float | None = None
) -> list[Row]:
    """Rows of a Label Studio JSON or JSON-MIN export. ``frame_rate``: the ``<Video frameRate>`` the
    project used, when it differs from the videos' own rate (then ``videos_dir`` gives their rate)."""
    path = Path(path)
    tasks = _load_json(path)
    if not isinstance(tasks, list):
        raise ExportFormatError(f"{path}: expected a list of tasks (Label Studio's JSON or JSON-MIN export)")
    rows = []
    for number, task in enumerate(tasks, start=1):
        where = f"{path}: task {task.get('id', number) if isinstance(task, dict) else number}"
        if not isinstance(task, dict):
            raise ExportFormatError(f"{where}: expected an object")
        video = _video_name(task.get("data", task), where, videos_dir)
        scale = _frame_scale(video, videos_dir, frame_rate, where)
        for item in _results(task, where):
            rows += _result_rows(item, video, scale, where)
    return rows


def _results(task: dict, where: str) -> list[dict]:
    """The result items of a task's annotation (JSON) or of a JSON-MIN record, as {type, value}."""
    if "annotations" in task:
        done = [a for a in task["annotations"] if isinstance(a, dict) and not a.get("was_cancelled")]
        done.sort(key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at", ""))), reverse=True)
        return list(done[0].get("result", [])) if done else []
    items = []
    for key, value in task.items():  # JSON-MIN: one key per control, its values with the type removed
        for entry in value if isinstance(value, list) else [value]:
            if isinstance(entry, dict) and "ranges" in entry:
                items.append({"id": key, "type": "timelinelabels", "value": entry})
            elif isinstance(entry, dict) and "choices" in entry:
                items.append({"id": key, "type": "choices", "value": entry})
            elif isinstance(entry, str) and key not in JSON_MIN_META and not _looks_like_media(entry):
                items.append({"id": key, "type": "choices", "value": {"choices": [entry]}})  # one choice: bare
    return items


def _looks_like_media(value: str) -> bool:
    return (
        bool(re.search(r"\.(mp4|avi|mov|mkv|webm|m4v|mpe?g)$", value, re.I)) or "://" in value or value.startswith("/")
    )


def _result_rows(item: dict, video: str, scale: float, where: str) -> list[Row]:
    kind, value = item.get("type"), item.get("value") or {}
    where = f"{where}, result {item.get('id', '?')!r}"
    if kind == "choices":
        choices = value.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ExportFormatError(f"{where}: value.choices must be a list of labels")
        return [Row(video, c) for c in choices]
    if kind != "timelinelabels":
        return []  # other controls (rectangles, text) carry no class of frames
    labels, ranges = value.get("timelinelabels"), value.get("ranges")
    if not isinstance(labels, list) or not isinstance(ranges, list) or not ranges:
        raise ExportFormatError(f"{where}: timelinelabels needs value.ranges [{{start, end}}] and value.timelinelabels")
    rows = []
    for span in ranges:
        try:
            start, end = int(span["start"]), int(span["end"])
        except (KeyError, TypeError, ValueError):
            raise ExportFormatError(f"{where}: a range must be {{start, end}} frame numbers, got {span!r}") from None
        if start < 1 or end < start:
            raise ExportFormatError(f"{where}: range {start}..{end} (frames count from 1, end >= start)")
        first, last = round((start - 1) * scale), round((end - 1) * scale)
        rows += [Row(video, label, start=first, end=last) for label in labels]
    return rows


def _video_name(data: dict, where: str, videos_dir: str | Path | None) -> str:
    url = (
        data.get("video")
        if isinstance(data.get("video"), str)
        else next((v for v in data.values() if isinstance(v, str) and _looks_like_media(v)), None)
    )
    if not url:
        raise ExportFormatError(f"{where}: no video in the task's data (expected data.video)")
    name = Path(unquote(urlparse(url).path)).name
    if videos_dir is None:
        return name
    folder = Path(videos_dir)
    stripped = UPLOAD_PREFIX.match(name)
    for candidate in (name, stripped.group(1) if stripped else None):
        if candidate and (folder / candidate).is_file():
            return candidate
    raise ExportFormatError(f"{where}: video {name!r} is not in {folder}")


def _frame_scale(video: str, videos_dir, frame_rate: float | None, where: str) -> float:
    """Source frames per Label Studio frame: 1 unless the project's frameRate differs from the video's."""
    if frame_rate is None:
        return 1.0
    if videos_dir is None:
        raise ExportFormatError(f"{where}: --frame-rate needs --videos (the videos' own frame rates)")
    from movinet.data.video import probe

    return probe(Path(videos_dir) / video).fps / frame_rate


def from_cvat(path: str | Path, video: str | None = None) -> list[Row]:
    """Rows of a "CVAT for images 1.1" export of a video task (``video`` overrides ``<source>``)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ExportFormatError(f"{path}: not XML ({exc})") from None
    if root.tag != "annotations":
        raise ExportFormatError(f"{path}: the root element is <{root.tag}>, not <annotations> (a CVAT XML export)")
    if root.find("image") is None and (root.find("track") is not None or root.find("meta/task/mode") is not None):
        raise ExportFormatError(
            f"{path}: a 'CVAT for video 1.1' export carries no tags; export as 'CVAT for images 1.1'"
        )
    video = video or (root.findtext("meta/task/source") or "").strip()
    if not video:
        raise ExportFormatError(f"{path}: no <meta><task><source> names the video; give it (--video NAME)")
    tagged: dict[int, list[str]] = {}
    for image in root.iter("image"):
        name, match = image.get("name", ""), re.fullmatch(r"frame_(\d+)(\.\w+)?", image.get("name", ""))
        if match is None:
            raise ExportFormatError(f"{path}: <image id={image.get('id')!r}> is named {name!r}, not frame_NNNNNN")
        labels = [tag.get("label") for tag in image.iter("tag")]
        if any(not label for label in labels):
            raise ExportFormatError(f"{path}: <image name={name!r}> has a <tag> without a label")
        if labels:
            tagged[int(match.group(1))] = labels
    return _runs(video, tagged)


def _runs(video: str, tagged: dict[int, list[str]]) -> list[Row]:
    """Per-frame labels as rows: a run of consecutive frames with one label is one range row."""
    rows, open_runs = [], {}  # label -> [first, last]
    for frame in sorted(tagged):
        for label in list(open_runs):
            if label not in tagged[frame] or open_runs[label][1] != frame - 1:
                rows.append(_run_row(video, label, *open_runs.pop(label)))
        for label in tagged[frame]:
            run = open_runs.setdefault(label, [frame, frame])
            run[1] = frame
    rows += [_run_row(video, label, *run) for label, run in open_runs.items()]
    return sorted(rows, key=lambda r: (r.start if r.start is not None else r.frame, r.label))


def _run_row(video: str, label: str, first: int, last: int) -> Row:
    return Row(video, label, frame=first) if first == last else Row(video, label, start=first, end=last)
