"""Shared test helpers. Models get random non-zero ReZero scales and BN statistics, so every path
through a block matters (a freshly built MoViNet has ReZero = 0 and is an identity per block)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from movinet.models import MoViNet

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = Path(sys.argv[0]).name  # "mutmut", "pytest", or pytest's __main__.py under `python -m pytest`

if PROGRAM == "mutmut":
    # mutmut forks every mutant's run from the one process that ran the tests first. An OpenMP pool
    # does not survive a fork (the child waits at a barrier for threads it does not have), so here
    # torch keeps one thread whatever a test or the code under test asks (training sets its own).
    torch.set_num_threads(1)
    torch.set_num_threads = lambda threads: None


def tiny_config(*overrides: str) -> dict:
    """The project's config with ``debug=tiny`` and ``overrides``, composed from conf/ (plain dict)."""
    from movinet.config import compose

    return compose(["debug=tiny", *overrides], root=ROOT)


@torch.no_grad()
def randomize(model: MoViNet, seed: int = 0) -> MoViNet:
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("rezero") or name.endswith("pos_scale"):
            param.copy_(torch.rand((), generator=gen) * 0.5 + 0.5)
        elif name.endswith("bn.weight"):
            param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
        elif name.endswith("bias"):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return model.eval()


def write_video(path, frames, fps: int, codec: str) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) to a real video file with PyAV."""
    from movinet.data.demo import write_video as _write

    _write(path, frames, fps, codec)


def gray_frames(count: int, height: int = 48, width: int = 64, step: int = 4):
    """Frame i is solid gray ``step * i``: its index survives lossy compression."""
    import numpy as np

    levels = (np.arange(count) * step).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_numbers(clip, step: int = 4):
    """Recover the painted frame indices of a (T, H, W, 3) uint8 clip."""
    import numpy as np

    return np.rint(np.asarray(clip, dtype=np.float64).mean(axis=(1, 2, 3)) / step).astype(int).tolist()


def write_frame_cache(folder, videos: dict, size: int = 8, frames: dict | None = None) -> None:
    """A frame cache as the extract stage writes it (``index.json`` + one ``.npy`` per video), made
    by hand: ``videos`` maps a name to ``(source_index, source_frames)``. Cached frame i is solid gray
    ``4 * i`` (its index survives every step) unless ``frames`` gives the video's uint8 array."""
    import json

    import numpy as np

    (folder / "frames").mkdir(parents=True)
    entries = {}
    for name, (source_index, source_frames) in videos.items():
        n = len(source_index)
        gray = (np.arange(n) * 4).astype(np.uint8)[:, None, None, None]
        array = (frames or {}).get(name)
        array = np.broadcast_to(gray, (n, size, size, 3)) if array is None else array
        np.save(folder / "frames" / f"{name}.npy", np.ascontiguousarray(array))
        entries[name] = {"file": f"frames/{name}.npy", "source_frames": source_frames, "source_index": source_index}
    (folder / "index.json").write_text(json.dumps({"params": {}, "videos": entries}))


def write_label_files(folder, labels: dict, stretches: list, classes: list[str]) -> None:
    """The ingest stage's outputs, by hand: per-frame labels, split stretches and the class list."""
    import csv
    import json

    folder.mkdir(parents=True)
    with open(folder / "frame_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "frame", "label"])
        writer.writerows((video, frame, label) for video, per in labels.items() for frame, label in per.items())
    with open(folder / "splits.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "split", "start_frame", "end_frame"])
        writer.writerows((s.video, s.split, s.start, s.end) for s in stretches)
    (folder / "classes.json").write_text(json.dumps({"classes": classes}))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Names the threads still running when the suite ends, and where each one is: a daemon thread
    inside a torch call when the interpreter finalizes aborts the process after every test passed
    ("terminate called without an active exception", pytorch#38228); this says which test left it."""
    import threading
    import traceback

    frames = sys._current_frames()
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            where = traceback.extract_stack(frames[thread.ident])[-3:] if thread.ident in frames else []
            at = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where))
            print(f"\n[still running at the end] {thread.name} (daemon={thread.daemon}): {at}", file=sys.stderr)
    seed = getattr(session.config.option, "randomly_seed", None)
    if isinstance(seed, int):  # pytest-randomly prints it in the header, which -q leaves out
        print(f"\ntest order: --randomly-seed={seed} repeats it", file=sys.stderr)
    session.config.stash[_VERDICT] = int(exitstatus)


_VERDICT = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """The suite's verdict is final once pytest has reported it: the process ends here with it, after
    the exit handlers, without the interpreter's finalization. There, a thread of a C++ library still
    in a call (torch, onnxruntime) is stopped by unwinding it, which aborts the whole process
    (pytorch#38228): a passing run read as a crash. ``make test`` sets PYTHONFAULTHANDLER, so an abort
    anywhere else still shows every thread's stack. Only where pytest is the program: mutmut runs
    pytest many times in its own process."""
    import atexit
    import os

    main = getattr(sys.modules["__main__"], "__spec__", None)
    is_program = (main is not None and main.name.split(".")[0] == "pytest") or PROGRAM == "pytest"
    if _VERDICT not in config.stash or not is_program:
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[_VERDICT])


def require_native_kernel() -> None:
    """Skip where our C++ kernel cannot be built (no compiler); in CI, which installs one, fail."""
    import os

    from movinet.models import native

    if native.load():
        return
    if os.environ.get("CI"):
        pytest.fail("the native stream kernel did not build in CI (see the warning): it must")
    pytest.skip("no C++ compiler here: the native stream kernel cannot be built")
