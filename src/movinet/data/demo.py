"""A seeded generator of real demo videos and their labels CSV, for a task no single frame solves.

A textured object moves left / right / up / down, rotates clockwise / counter-clockwise, grows or
shrinks, over a random textured background with jittering distractors. Any one frame looks the same
for every class; only motion tells them apart. Videos vary in length, fps, object size and speed,
and in container/codec (H.264 mp4, MPEG-4 avi, VP8 webm). The CSV mixes the label forms users
have: whole-video labels, multi-action videos labelled by frame ranges (with ``background``
stretches where nothing happens), and sparsely labelled videos (~10 % keyframes, some given as
timestamps) that need interpolation.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from movinet.config.schema import GenerateConfig  # data.generate: how many videos, size, lengths, seed
from movinet.files import atomic_dir

CLASSES = ("grow", "move_down", "move_left", "move_right", "move_up", "rotate_ccw", "rotate_cw", "shrink")
CONTAINERS = (("mp4", "libx264"),) * 4 + (("avi", "mpeg4"), ("webm", "libvpx"))
FPS_CHOICES = (15, 20, 24, 25, 30)


def _texture(rng: np.random.Generator, h: int, w: int, cells: int, contrast: float) -> np.ndarray:
    """Smooth random colour texture (upsampled noise), float RGB in [0, 1]."""
    grid = rng.random((cells + 1, cells + 1, 3))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = grid
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    tex = top * (1 - fy) + bottom * fy
    return 0.5 + (tex - 0.5) * contrast


def _object_texture(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A square patch with an asymmetric pattern (stripes + a marked corner), so rotation shows."""
    tex = _texture(rng, size, size, 3, 1.6).clip(0, 1)
    stripes = (np.arange(size) // max(2, size // 6)) % 2
    tex[stripes.astype(bool)] *= 0.35
    tex[: size // 2, : size // 3] = rng.random(3) * 0.3 + 0.7 * np.eye(3)[rng.integers(3)]
    return tex


def _paste(frame: np.ndarray, tex: np.ndarray, cx: float, cy: float, angle: float, size: float) -> None:
    """Draw ``tex`` centred at (cx, cy), rotated by ``angle`` radians, ``size`` pixels wide (wraps)."""
    h, w, _ = frame.shape
    half = size * 0.75  # covers the rotated square
    x0, x1 = int(math.floor(cx - half)), int(math.ceil(cx + half))
    y0, y1 = int(math.floor(cy - half)), int(math.ceil(cy + half))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    dx, dy = xs - cx, ys - cy
    c, s = math.cos(-angle), math.sin(-angle)
    u = (c * dx - s * dy) / size + 0.5
    v = (s * dx + c * dy) / size + 0.5
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    n = tex.shape[0]
    ty, tx = (v[inside] * n).astype(int), (u[inside] * n).astype(int)
    frame[ys[inside] % h, xs[inside] % w] = tex[ty, tx]


@dataclass
class _Segment:
    label: str  # a class or "background"
    length: int


@dataclass(frozen=True)
class _Looks:
    """Small shared pools of backgrounds and object textures: every look appears with every class,
    so a model cannot tell the class from what a video looks like, only from how it moves."""

    backgrounds: list[np.ndarray]
    objects: list[np.ndarray]

    @classmethod
    def make(cls, cfg: GenerateConfig) -> _Looks:
        rng = np.random.default_rng([cfg.seed, 10_000])
        backgrounds = [
            _texture(rng, cfg.height, cfg.width, int(rng.integers(3, 8)), float(rng.uniform(0.2, 0.45)))
            for _ in range(8)
        ]
        return cls(backgrounds, [_object_texture(rng) for _ in range(6)])


def _render(cfg: GenerateConfig, rng: np.random.Generator, segments: list[_Segment], looks: _Looks) -> np.ndarray:
    h, w = cfg.height, cfg.width
    background = looks.backgrounds[int(rng.integers(len(looks.backgrounds)))]
    if rng.random() < 0.5:
        background = background[::-1, ::-1]
    tex = looks.objects[int(rng.integers(len(looks.objects)))]
    distractors = [
        (_object_texture(rng, 16), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 12))
        for _ in range(int(rng.integers(1, 3)))
    ]
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    angle, size = rng.uniform(0, 2 * math.pi), rng.uniform(26, 36)
    frames = []
    for seg in segments:
        # Motion per source frame is large enough to be seen a few pixels apart at 1/4 resolution.
        speed = rng.uniform(2.0, 4.0)  # pixels per frame (positions wrap around the frame)
        # Under ~30 degrees between sampled frames, so clockwise never looks like counter-clockwise
        # (the stripes repeat every 180 degrees; the marked corner tells the rest).
        spin = math.radians(rng.uniform(3.5, 7.0))
        rate = rng.uniform(1.03, 1.06)  # size change per frame; sizes cycle within 16..48 px
        for _ in range(seg.length):
            if seg.label == "move_left":
                cx -= speed
            elif seg.label == "move_right":
                cx += speed
            elif seg.label == "move_up":
                cy -= speed
            elif seg.label == "move_down":
                cy += speed
            elif seg.label == "rotate_cw":
                angle += spin
            elif seg.label == "rotate_ccw":
                angle -= spin
            elif seg.label == "grow":
                size = size * rate if size * rate <= 48.0 else 16.0  # sawtooth: grow, snap back
            elif seg.label == "shrink":
                size = size / rate if size / rate >= 16.0 else 48.0
            frame = background.copy()
            for dtex, dx, dy, dsize in distractors:
                _paste(frame, dtex, dx + rng.normal(0, 0.6), dy + rng.normal(0, 0.6), 0.0, dsize)
            jitter = rng.normal(0, 0.3, 2)
            _paste(frame, tex, cx + jitter[0], cy + jitter[1], angle, size)
            frames.append(frame)
    video = np.stack(frames)
    video += rng.normal(0, 0.01, video.shape)  # sensor noise
    return (video.clip(0, 1) * 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        elif codec == "libvpx":
            stream.bit_rate = 1_500_000
        else:
            stream.bit_rate = 2_000_000
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _plan(rng: np.random.Generator, cfg: GenerateConfig, i: int) -> tuple[str, list[_Segment]]:
    """The labelling style and segments of video ``i``; every class gets whole-video examples."""
    style = ("whole", "ranges", "sparse", "ranges")[i % 4]
    length = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    if style == "whole":
        return style, [_Segment(CLASSES[(i // 4) % len(CLASSES)], length)]
    parts = int(rng.integers(2, 4))
    labels = list(rng.choice(CLASSES, size=parts, replace=False))
    gaps = [int(rng.integers(8, 30)) if style == "ranges" and rng.random() < 0.6 else 0 for _ in labels]
    each = max(24, (length - sum(gaps)) // parts)
    segments: list[_Segment] = []
    for label, gap in zip(labels, gaps):
        if gap:
            segments.append(_Segment("background", gap))
        segments.append(_Segment(str(label), each))
    return style, segments


def make_demo_data(out_dir: str | Path, cfg: GenerateConfig = GenerateConfig()) -> Path:
    """Write ``videos/`` and ``labels.csv`` under ``out_dir`` (atomically: temp folder + rename)."""
    with atomic_dir(out_dir) as tmp:
        _write_demo(tmp, cfg)
    return Path(out_dir)


def _write_demo(tmp: Path, cfg: GenerateConfig) -> None:
    (tmp / "videos").mkdir(parents=True)
    rows: list[dict] = []
    looks = _Looks.make(cfg)
    for i in range(cfg.videos):
        rng = np.random.default_rng([cfg.seed, i])
        style, segments = _plan(rng, cfg, i)
        ext, codec = CONTAINERS[i % len(CONTAINERS)]
        fps = int(FPS_CHOICES[int(rng.integers(len(FPS_CHOICES)))])
        name = f"demo_{i:03d}.{ext}"
        frames = _render(cfg, rng, segments, looks)
        write_video(tmp / "videos" / name, frames, fps, codec)
        rows += _label_rows(name, style, segments, fps, rng)
    with open(tmp / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "frame", "start_frame", "end_frame", "timestamp", "label"])
        writer.writeheader()
        writer.writerows(rows)


def _label_rows(name: str, style: str, segments: list[_Segment], fps: int, rng) -> list[dict]:
    if style == "whole":
        return [{"filename": name, "label": segments[0].label}]
    rows, start = [], 0
    for seg in segments:
        end = start + seg.length - 1
        if style == "ranges":
            rows.append({"filename": name, "start_frame": start, "end_frame": end, "label": seg.label})
        else:  # sparse: about one keyframe in ten, some as timestamps
            for frame in range(start + int(rng.integers(0, 5)), end + 1, 10):
                if rng.random() < 0.3:
                    rows.append({"filename": name, "timestamp": f"{frame / fps:.4f}", "label": seg.label})
                else:
                    rows.append({"filename": name, "frame": frame, "label": seg.label})
        start = end + 1
    return rows
