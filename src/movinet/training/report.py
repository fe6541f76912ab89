"""The evaluation report: one self-contained page per evaluated model, ``reports/<name>/index.html``.

Per test video: a strip of thumbnails, its true labels against the predicted per-frame timeline,
and the video-level prediction (the softmax averaged over its evaluation clips, as the served model
answers) with its confidence; the worst videos (least probability on the true class) come first.
Above them, the video-level confusion matrix with the videos behind each cell. Everything is inline
(CSS, SVG, JPEG thumbnails as data URIs, no script): the page opens offline, from a DVC checkout or
as an MLflow artifact.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from movinet.data.clips import Clip, cached_labels
from movinet.data.datamodule import ClipDataModule
from movinet.data.dataset import ClipDataset, cached_range
from movinet.data.ingest import read_frame_labels, read_splits
from movinet.files import write_text_atomic

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#17becf",
)
THUMBNAILS = 6


@dataclass
class VideoResult:
    video: str
    first: int  # cached frames first .. first + len(truth) - 1: the video's test stretch
    true: str
    probabilities: np.ndarray  # video level: the mean softmax of its evaluation clips
    truth: list[str | None] = field(default_factory=list)  # per cached frame
    timeline: list[tuple[int, int]] = field(default_factory=list)  # (cached frame, predicted class index)
    thumbnails: list[str] = field(default_factory=list)  # JPEG data URIs


def video_results(
    data: ClipDataModule, logits: torch.Tensor, classes: list[str], model: Callable[[torch.Tensor], torch.Tensor]
) -> list[VideoResult]:
    """Each test video's answer from its evaluation clips (``logits``, in the test loader's order),
    plus a timeline of sliding clips half a span apart over its test stretch."""
    dataset = data.datasets["test"]
    probabilities = torch.softmax(logits, 1).numpy()
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(dataset.clips):
        by_video[clip.video].append(i)
    labels = read_frame_labels(data.labels_dir)
    results = []
    for stretch in (s for s in read_splits(data.labels_dir) if s.split == "test" and s.video in by_video):
        entry = dataset.index[stretch.video]
        first, length = cached_range(entry["source_index"], entry["source_frames"], stretch, dataset.params.span)
        truth = cached_labels(entry["source_index"], labels.get(stretch.video, {}))[first : first + length]
        clips = [dataset.clips[i] for i in by_video[stretch.video]]
        true = max(sorted({c.label for c in clips}), key=lambda lab: sum(c.label == lab for c in clips))
        result = VideoResult(stretch.video, first, true, probabilities[by_video[stretch.video]].mean(0), truth)
        result.timeline = _timeline(dataset, stretch.video, first, length, model)
        result.thumbnails = _thumbnails(dataset.frames(stretch.video), first, length)
        results.append(result)
    true_index = {c: i for i, c in enumerate(classes)}
    return sorted(results, key=lambda r: (float(r.probabilities[true_index[r.true]]), r.video))


def _timeline(dataset: ClipDataset, video: str, first: int, length: int, model) -> list[tuple[int, int]]:
    """(last frame, predicted class) of clips half a span apart over the stretch."""
    span = dataset.params.span
    starts = list(range(first, first + length - span + 1, max(1, span // 2)))
    if not starts:
        return []
    windows = ClipDataset(
        dataset.frames_dir,
        [Clip(video, s, dataset.classes[0], 1.0) for s in starts],
        dataset.classes,
        dataset.params,
        dataset.augment,
        train=False,
    )
    predicted = []
    with torch.inference_mode():
        for i in range(0, len(windows), 32):
            batch = torch.stack([windows[j][0] for j in range(i, min(i + 32, len(windows)))])
            predicted += model(batch).argmax(1).tolist()
    return [(s + span - 1, p) for s, p in zip(starts, predicted)]


def _thumbnails(frames: np.ndarray, first: int, length: int, height: int = 56) -> list[str]:
    from PIL import Image

    out = []
    for position in np.linspace(first, first + max(0, length - 1), THUMBNAILS).round().astype(int):
        image = Image.fromarray(np.asarray(frames[position]))
        image = image.resize((max(1, round(image.width * height / image.height)), height))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
        out.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


def write_report(path: Path, title: str, classes: list[str], results: list[VideoResult], metrics: dict) -> Path:
    """The page, written atomically."""
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    parts = [_HEAD.format(title=html.escape(title)), _summary(metrics, classes, colors)]
    parts.append(_confusion(results, classes))
    parts += [_video_section(r, classes, colors) for r in results]
    write_text_atomic(path, "\n".join(parts) + "\n</body></html>\n")
    return path


def _summary(metrics: dict, classes: list[str], colors: dict[str, str]) -> str:
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    legend = " ".join(f'<span class="key" style="background:{colors[c]}"></span>{html.escape(c)}' for c in classes)
    return f"<p>{html.escape(shown)}</p><p class=legend>{legend} <span class=key></span>unlabelled / background</p>"


def _confusion(results: list[VideoResult], classes: list[str]) -> str:
    cells: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        cells[(r.true, classes[int(r.probabilities.argmax())])].append(r.video)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = []
    for actual in classes:
        row = "".join(
            f'<td class="{"hit" if actual == p else "miss" if cells[(actual, p)] else ""}">'
            + "<br>".join(f'<a href="#{_anchor(v)}">{html.escape(v)}</a>' for v in cells[(actual, p)])
            + "</td>"
            for p in classes
        )
        rows.append(f"<tr><th>{html.escape(actual)}</th>{row}</tr>")
    return (
        "<h2>Videos by actual (rows) and predicted (columns) class</h2>"
        f"<table class=confusion><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _video_section(r: VideoResult, classes: list[str], colors: dict[str, str]) -> str:
    predicted = classes[int(r.probabilities.argmax())]
    verdict = "right" if predicted == r.true else "wrong"
    p_true = float(r.probabilities[classes.index(r.true)])
    strip = "".join(f'<img src="{uri}" alt="frame">' for uri in r.thumbnails)
    return (
        f'<section class="video {verdict}" id="{_anchor(r.video)}"><h3>{html.escape(r.video)}</h3>'
        f"<p>true <b>{html.escape(r.true)}</b>, predicted <b>{html.escape(predicted)}</b> "
        f"({float(r.probabilities.max()):.3f}); p(true) {p_true:.3f}</p><div class=strip>{strip}</div>"
        f"{_timeline_svg(r, classes, colors)}</section>"
    )


def _timeline_svg(r: VideoResult, classes: list[str], colors: dict[str, str], width: int = 720) -> str:
    n = max(1, len(r.truth))
    scale = width / n
    truth = "".join(
        f'<rect x="{i * scale:.1f}" y="14" width="{scale + 0.5:.1f}" height="14" fill="{colors.get(lab, "#ddd")}"/>'
        for i, lab in enumerate(r.truth)
    )
    predicted, previous = [], 0
    for frame, index in r.timeline:  # each clip's answer holds from the previous clip's end to its own
        x, end = (previous) * scale, (frame - r.first + 1) * scale
        predicted.append(
            f'<rect x="{x:.1f}" y="44" width="{max(0.5, end - x):.1f}" height="14" fill="{colors[classes[index]]}"/>'
        )
        previous = frame - r.first + 1
    return (
        f'<svg width="{width + 90}" height="62" role="img"><text x="{width + 6}" y="26">true</text>'
        f'<text x="{width + 6}" y="56">predicted</text>{truth}{"".join(predicted)}</svg>'
    )


def _anchor(video: str) -> str:
    return "v-" + "".join(ch if ch.isalnum() else "-" for ch in video)


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222 }}
table.confusion {{ border-collapse: collapse }}
table.confusion td, table.confusion th {{ border: 1px solid #ccc; padding: 3px 6px; vertical-align: top;
 font-size: 12px }}
td.hit {{ background: #e6f4e6 }} td.miss {{ background: #fbe6e6 }}
section.video {{ margin: 1em 0; padding: .5em; border-left: 4px solid #59a14f }}
section.wrong {{ border-color: #e15759 }} .strip img {{ height: 56px; margin-right: 2px }}
.key {{ display: inline-block; width: 12px; height: 12px; background: #ddd; margin: 0 3px 0 10px }}
h3 {{ margin: .2em 0 }}
</style></head><body><h1>{title}</h1>"""
