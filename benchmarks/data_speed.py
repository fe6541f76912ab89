"""Data speed: clips/s from the frame cache vs decoding the video per clip; extraction vs raw decode.

    python benchmarks/data_speed.py [--videos 6] [--frames 300] [--clips 300]

Baselines measured in the same run: decord decoding each clip from the mp4 (open + get_batch of
the clip's frames, the same transform after), and decord's raw decode of every frame.
Targets: cache >= 10x per-clip decoding and >= 300 clips/s on one worker (T=16 at 172x172);
extraction >= 50 % of raw decode speed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from movinet.data.clips import Clip, ClipParams
from movinet.data.dataset import Augment, ClipDataset, center_crop
from movinet.data.demo import write_video
from movinet.data.extract import extract_videos, load_index
from movinet.data.video import list_videos, open_reader


def make_videos(root: Path, count: int, frames: int, height: int, width: int) -> None:
    """Moving textured gradients with noise: h264 content of ordinary difficulty."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        base = rng.random((3,)) * 255
        video = np.empty((frames, height, width, 3), np.uint8)
        for t in range(frames):
            wave = 127 * np.sin((xx + 3 * t) / 17.0 + i) * np.cos((yy - 2 * t) / 23.0)
            for c in range(3):
                video[t, :, :, c] = np.clip(base[c] * 0.5 + wave + rng.normal(0, 4, (height, width)), 0, 255)
        write_video(root / f"v{i}.mp4", video, 25, "libx264")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--size", type=int, default=172)
    parser.add_argument("--num-frames", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker
    height, width = args.size, 2 * round(args.size * 2 / 3)  # yuv420p needs even sizes
    print(
        f"# movinet data speed: {args.videos} h264 videos x {args.frames} frames at {width}x{height}, "
        f"T={args.num_frames}, 1 thread"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        make_videos(root / "videos", args.videos, args.frames, height, width)
        videos = list_videos(root / "videos")

        # Raw decode: every frame, decord, native size.
        start = time.perf_counter()
        total = 0
        for path in videos.values():
            reader = open_reader(path)
            for s in range(0, len(reader), 32):
                total += len(reader.get_batch(list(range(s, min(s + 32, len(reader))))).asnumpy())
        raw_fps = total / (time.perf_counter() - start)

        start = time.perf_counter()
        extract_videos(root / "videos", root / "cache", size=args.size, workers=1, progress=False)
        extract_fps = total / (time.perf_counter() - start)

        params = ClipParams(num_frames=args.num_frames, frame_stride=2)
        index = load_index(root / "cache")["videos"]
        rng = random.Random(0)
        clips = []
        for _ in range(args.clips):
            video = rng.choice(sorted(index))
            clips.append(Clip(video, rng.randrange(index[video]["frames"] - params.span + 1), "x", 1.0))
        dataset = ClipDataset(root / "cache", clips, ["x"], params, Augment(crop_size=args.size), train=False)

        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        cache_cps = len(dataset) / (time.perf_counter() - start)

        def decode_clip(clip: Clip) -> torch.Tensor:
            reader = open_reader(videos[clip.video], width=index[clip.video]["width"], height=args.size)
            frames = torch.from_numpy(reader.get_batch(params.frame_indices(clip.start).tolist()).asnumpy())
            return center_crop(frames.permute(3, 0, 1, 2).float().div_(255), args.size)

        subset = clips[: max(20, args.clips // 5)]
        start = time.perf_counter()
        for clip in subset:
            decode_clip(clip)
        decode_cps = len(subset) / (time.perf_counter() - start)

    print("\n| measure | value | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| clips/s from the cache (T={args.num_frames}, {args.size}², 1 worker) | {cache_cps:.0f} | "
        f"{decode_cps:.1f} (decord per clip) | {cache_cps / decode_cps:.1f}x | >= 10x and >= 300 clips/s |"
    )
    print(
        f"| extraction frames/s (decode + resize + write) | {extract_fps:.0f} | {raw_fps:.0f} "
        f"(decord raw decode) | {extract_fps / raw_fps:.2f} | >= 0.5 |"
    )


if __name__ == "__main__":
    main()
