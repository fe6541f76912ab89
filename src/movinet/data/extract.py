"""Frame extraction: decode each video once, resample, resize, and cache frames for fast clip reads.

Cache layout (``OUT_DIR``):

* ``frames/<name>.npy``: one uint8 array ``(frames, H, W, 3)`` per video, memory-mappable, so a
  clip read is an index into a mapped file (no decoding at training time);
* ``index.json``: per video the cache file, frame count, source frame count and fps, size, the
  file's size/mtime/sha256, and ``source_index`` (the source frame behind each cached frame, which
  maps CSV frame numbers exactly);
* ``extract_report.json``: what was extracted, kept, removed, and every skipped file with the reason.

Incremental: a video is re-extracted only when its size or mtime changed or the parameters (fps,
size) did. Atomic: each array is written under a temporary name and renamed, and the index is
rewritten (atomically) after every finished video, so an interrupted run loses at most the video
in flight and leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from movinet.data.video import list_videos, open_reader, probe, resample_indices, resized_shape
from movinet.files import atomic_path, write_json_atomic

INDEX_FILE = "index.json"
REPORT_FILE = "extract_report.json"
FRAMES_DIR = "frames"
BATCH = 32  # frames decoded per get_batch call: bounded memory for long or large videos


@dataclass
class ExtractReport:
    extracted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}

    def to_dict(self) -> dict:
        return {
            "extracted": self.extracted,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": self.skipped,
        }


class ExtractionError(ValueError):
    """Raised in strict mode when any video could not be extracted (the report is still written)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_name(rel: str) -> str:
    """A flat, safe file name for a video's relative path (a hash keeps names unique)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel)[-80:]
    return f"{stem}.{hashlib.sha1(rel.encode()).hexdigest()[:8]}.npy"


def extract_one(path: Path, dest: Path, fps: float | None, size: int | None) -> dict:
    """Decode one video into ``dest`` (via a temporary file); returns its index entry."""
    info = probe(path)
    height, width = resized_shape(info.height, info.width, size)
    indices = resample_indices(info.frames, info.fps, fps)
    reader = open_reader(path, width=width, height=height)
    try:
        # No fsync: the cache is derived data, and a flush per video would halve extraction speed.
        with atomic_path(dest, fsync=False) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(indices), height, width, 3))
            for start in range(0, len(indices), BATCH):
                chunk = indices[start : start + BATCH]
                out[start : start + len(chunk)] = reader.get_batch(chunk.tolist()).asnumpy()
            out.flush()
            del out
    except (ValueError, OSError, MemoryError):
        raise  # a bad video is a ValueError (skipped and reported); a full disk or no memory fails the stage
    except Exception as exc:  # decord's errors on a stream it cannot decode
        raise ValueError(f"{path}: decoding failed ({str(exc).splitlines()[0][:200]})") from exc
    stat = path.stat()
    return {
        "file": f"{FRAMES_DIR}/{dest.name}",
        "frames": int(len(indices)),
        "height": height,
        "width": width,
        "fps": float(fps) if len(indices) < info.frames else info.fps,
        "source_frames": info.frames,
        "source_fps": info.fps,
        "source_height": info.height,
        "source_width": info.width,
        "source_index": indices.tolist(),
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(path),
    }


def _job(path: str, dest: str, fps: float | None, size: int | None) -> dict:
    return extract_one(Path(path), Path(dest), fps, size)


def load_index(out_dir: str | Path) -> dict:
    path = Path(out_dir) / INDEX_FILE
    if not path.is_file():
        return {"params": None, "videos": {}}
    return json.loads(path.read_text())


def extract_videos(
    video_dir: str | Path,
    out_dir: str | Path,
    fps: float | None = None,
    size: int | None = 172,
    workers: int = 1,
    strict: bool = False,
    progress: bool = True,
) -> ExtractReport:
    """Bring the cache in ``out_dir`` up to date with the videos in ``video_dir``."""
    videos = list_videos(video_dir)
    out_dir = Path(out_dir)
    frames_dir = out_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    params = {"fps": fps, "size": size}
    index = load_index(out_dir)
    entries: dict[str, dict] = index["videos"] if index.get("params") == params else {}
    report = ExtractReport()
    todo = _changed(videos, entries, out_dir, report)
    _remove_strays(frames_dir, {Path(e["file"]).name for e in entries.values()} | {cache_name(rel) for rel in todo})

    def save_index() -> None:
        write_json_atomic(out_dir / INDEX_FILE, {"params": params, "videos": dict(sorted(entries.items()))})

    save_index()
    jobs = {rel: (str(videos[rel]), str(frames_dir / cache_name(rel)), fps, size) for rel in todo}
    with tqdm(total=len(todo), unit="video", desc="extract frames", disable=not progress or not todo) as bar:
        for rel, result in _results(jobs, workers):
            _finish(rel, result, entries, report)
            save_index()
            bar.update(1)
    report.extracted.sort()
    write_json_atomic(out_dir / REPORT_FILE, report.to_dict())
    if strict and report.skipped:
        raise ExtractionError(
            f"{len(report.skipped)} video(s) could not be extracted: "
            + "; ".join(f"{s['file']}: {s['reason']}" for s in report.skipped)
        )
    return report


def _changed(videos: dict[str, Path], entries: dict, out_dir: Path, report: ExtractReport) -> list[str]:
    """The videos to (re)extract; drops the entries of changed and vanished videos from ``entries``."""
    todo = []
    for rel, path in videos.items():
        entry, stat = entries.get(rel), path.stat()
        if (
            entry is not None
            and entry["size_bytes"] == stat.st_size
            and entry["mtime_ns"] == stat.st_mtime_ns
            and (out_dir / entry["file"]).is_file()
        ):
            report.unchanged.append(rel)
        else:
            entries.pop(rel, None)
            todo.append(rel)
    for rel in sorted(set(entries) - set(videos)):
        entries.pop(rel)
        report.removed.append(rel)
    return todo


def _results(jobs: dict[str, tuple], workers: int):
    """``(video, result)`` as each extraction finishes; ``result()`` returns its entry or raises."""
    if workers <= 1:
        for rel, job in jobs.items():
            yield rel, partial(_job, *job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(_job, *job): rel for rel, job in jobs.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result


def _finish(rel: str, result, entries: dict, report: ExtractReport) -> None:
    try:
        entries[rel] = result()
        report.extracted.append(rel)
    except ValueError as exc:
        report.skipped.append({"file": rel, "reason": str(exc)})


def _remove_strays(frames_dir: Path, keep: set[str]) -> None:
    """Delete leftovers of an interrupted run and caches of videos that are gone."""
    for path in frames_dir.iterdir():
        if path.name not in keep:
            path.unlink()
