"""ONNX export of the stream step: onnxruntime, fed frame by frame, equals PyTorch."""

import subprocess
import sys

import numpy as np
import torch

from conftest import randomize
from movinet.inference.onnx_export import OnnxStream, export_stream_onnx
from movinet.models import build, save_checkpoint


def _torch_frames(model, clip):
    state = model.init_state(1, clip.shape[-2:])
    outs = []
    with torch.no_grad():
        for t in range(clip.shape[2]):
            logits, state = model(clip[:, :, t : t + 1], state)
            outs.append(logits.numpy())
    return outs


def test_onnxruntime_stream_equals_pytorch(tmp_path):
    model = randomize(build("a0", "stream", 6), seed=5)
    path = export_stream_onnx(model, tmp_path / "a0.onnx", image_size=(48, 64), class_names=list("abcdef"))
    runtime = OnnxStream(path)
    assert runtime.class_names == list("abcdef") and runtime.image_size == (48, 64)
    clip = torch.rand(1, 3, 5, 48, 64)
    expected = _torch_frames(model, clip)
    for t in range(5):
        got = runtime.step(clip[:, :, t : t + 1].numpy())
        scale = np.abs(expected[t]).max()
        assert scale > 0.1
        assert np.abs(got - expected[t]).max() <= 1e-4 * scale, f"frame {t}"


def test_cli_export_from_checkpoint(tmp_path):
    model = randomize(build("a1", "stream", 3), seed=6)
    ckpt = save_checkpoint(model, tmp_path / "m.pt", class_names=["x", "y", "z"])
    out = tmp_path / "m.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "export", "onnx", "--weights", str(ckpt), "--size", "40", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    runtime = OnnxStream(out)
    assert runtime.class_names == ["x", "y", "z"]
    clip = torch.rand(1, 3, 3, 40, 40)
    expected = _torch_frames(model, clip)[-1]
    for t in range(3):
        got = runtime.step(clip[:, :, t : t + 1].numpy())
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_cli_refuses_base_checkpoint(tmp_path):
    ckpt = save_checkpoint(build("a0", "base", 3), tmp_path / "b.pt")
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "export", "onnx", "--weights", str(ckpt), "-o", str(tmp_path / "b.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "variant='stream'" in done.stderr
    assert not (tmp_path / "b.onnx").exists()
