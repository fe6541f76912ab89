"""Training options against what they promise, in process and at tiny sizes: ``model.pretrained``
loads every backbone tensor of a Kinetics-600 file, ``train.freeze_backbone`` trains the head alone,
``optim=rmsprop`` and the warmup + cosine schedule follow their formulas (worked out here by hand), and
``data.clips.train_sampling=random`` draws every valid window and nothing else."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ROOT, frame_numbers, gray_frames, randomize, tiny_config, write_video
from movinet.config import to_config
from movinet.models import build
from movinet.models.weights import PRETRAINED_FILES, to_port_state_dict
from movinet.training.initialise import initialise
from movinet.training.module import VideoClassifier
from movinet.training.optim import build_optimizer, optim_config, warmup_cosine

CLASSES = ["clap", "nod", "wave"]


@torch.no_grad()
def scramble(model, seed: int):
    """Every floating tensor of ``model`` random (BN variances positive): a file of such values
    shares no tensor with a freshly built model, so equal values can only have been loaded."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            values = torch.rand(tensor.shape, generator=gen) + 0.5 if name.endswith("running_var") else None
            tensor.copy_(values if values is not None else torch.randn(tensor.shape, generator=gen) * 0.1)
    return model


def kinetics_file(tmp_path: Path, variant: str, edit=None) -> tuple[Path, dict]:
    """A fake Kinetics-600 file of MoViNet-A0 in the published (PyTorch port) format, random values;
    ``edit`` may change the port state dict first. Returns the path and the donor's state dict."""
    donor = scramble(build("a0", variant, 600), seed=7)
    port = to_port_state_dict(donor)
    if edit is not None:
        edit(port)
    path = tmp_path / PRETRAINED_FILES[("a0", variant)]
    torch.save(port, path)
    return path, donor.state_dict()


def init_from(path: Path, variant: str):
    """A model for CLASSES initialised as training does with ``model.pretrained=path``."""
    cfg = to_config(tiny_config(f"model.pretrained={path}", f"model.variant={variant}"))
    model = build("a0", variant, len(CLASSES))
    own = {k: v.clone() for k, v in model.state_dict().items()}
    note = initialise(model, CLASSES, cfg, "unused")
    return model, own, note


# --- model.pretrained -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "stream"])
def test_pretrained_loads_every_backbone_tensor(tmp_path, variant):
    path, donor = kinetics_file(tmp_path, variant)
    model, own, note = init_from(path, variant)
    assert note == f"Kinetics-600 weights from {path}, new 3-class head"
    state = model.state_dict()
    head = {"classifier.logits.weight", "classifier.logits.bias"}
    assert set(state) == set(donor) and head < set(state)
    for key, value in state.items():
        if key in head:  # the new last layer: the model's own, for 3 classes
            assert value.shape[0] == len(CLASSES) and torch.equal(value, own[key]), key
        elif key.endswith("num_batches_tracked"):
            assert torch.equal(value, donor[key]), key
        else:  # every other tensor is the file's (and none was equal before)
            assert not torch.equal(own[key], donor[key]), key
            assert torch.equal(value, donor[key]), key


def test_pretrained_file_missing_a_tensor_is_refused_by_name(tmp_path):
    key = "blocks.b1_l0.expand.conv_1.conv3d.weight"
    path, _ = kinetics_file(tmp_path, "base", edit=lambda port: port.pop(key))
    with pytest.raises(ValueError, match=re.escape(f"missing tensor {key!r} for MoViNet-A0 base")):
        init_from(path, "base")


def test_pretrained_file_with_an_unknown_tensor_is_refused_by_name(tmp_path):
    extra = "blocks.b0_l0.deep.conv_3.conv3d.weight"  # a layer this model does not have
    path, _ = kinetics_file(tmp_path, "base", edit=lambda port: port.update({extra: torch.zeros(8, 1, 3, 3, 3)}))
    with pytest.raises(ValueError, match=re.escape(f"unexpected tensor(s) [{extra!r}] for MoViNet-A0 base")):
        init_from(path, "base")


# --- train.freeze_backbone --------------------------------------------------------------------


@pytest.mark.parametrize("frozen", [True, False])
def test_freeze_backbone_steps_the_head_alone(frozen):
    """One AdamW step (with weight decay, which would move any parameter it holds): frozen, every
    backbone parameter is bit-identical and every head parameter moved; not frozen, both moved."""
    optim = {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "warmup_steps": 0}
    module = VideoClassifier("a0", "base", CLASSES, dropout=0.0, optim=optim, steps=10, freeze_backbone=frozen)
    randomize(module.model).train()
    before = {k: p.detach().clone() for k, p in module.model.named_parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    head = {k for k in before if k.startswith("classifier.")}
    trained = {k for k, p in module.model.named_parameters() if id(p) in held}
    assert head and trained == (head if frozen else set(before))

    x = torch.rand(2, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    F.cross_entropy(module(x), torch.tensor([0, 2])).backward()
    optimizer.step()
    after = dict(module.model.named_parameters())
    moved = {k for k in before if not torch.equal(after[k], before[k])}
    assert moved == (head if frozen else set(before))


# --- optim=rmsprop and the schedule -------------------------------------------------------------


def lr_by_hand(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup ``(step + 1) / warmup``, then cosine from ``base`` to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def scheduled_lrs(module: VideoClassifier) -> list[float]:
    """The learning rate of each of the module's ``steps`` optimizer steps, as Lightning steps them."""
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert schedule["interval"] == "step"  # stepped per optimizer step, not per epoch
    lrs = []
    for _ in range(module.hparams.steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves
        schedule["scheduler"].step()
    return lrs


def test_rmsprop_gets_the_configured_hyperparameters():
    conf = yaml.safe_load((ROOT / "conf" / "optim" / "rmsprop.yaml").read_text())
    optim = tiny_config("optim=rmsprop")["optim"]
    module = VideoClassifier("a0", "base", CLASSES, optim=optim, steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.RMSprop
    group = optimizer.param_groups[0]
    assert group["initial_lr"] == conf["lr"] == 0.0018
    assert (group["alpha"], group["momentum"], group["eps"]) == (conf["alpha"], conf["momentum"], conf["eps"])
    assert group["weight_decay"] == conf["weight_decay"] and not group["centered"]


def test_rmsprop_steps_follow_the_formula():
    """Two steps on a 3-value parameter, worked out by hand (PyTorch's RMSprop, not centred):
    g += wd p;  v = alpha v + (1 - alpha) g^2;  b = momentum b + g / (sqrt(v) + eps);  p -= lr b.
    Every hyperparameter differs from the others here, so none can stand in for another."""
    lr, alpha, momentum, eps, wd = 0.5, 0.8, 0.7, 0.25, 0.1
    values = {"lr": lr, "alpha": alpha, "momentum": momentum, "eps": eps, "weight_decay": wd}
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    optimizer = build_optimizer([param], optim_config({**tiny_config("optim=rmsprop")["optim"], **values}))
    grads = [torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64), torch.tensor([-0.4, 0.8, 1.0], dtype=torch.float64)]
    p, v, b = param.detach().clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        g = grad + wd * p
        v = alpha * v + (1 - alpha) * g**2
        b = momentum * b + g / (v.sqrt() + eps)
        p = p - lr * b
        torch.testing.assert_close(param.detach(), p, rtol=1e-12, atol=1e-12)
        if grad is grads[0]:  # in numbers: g = 0.3 + 0.1 = 0.4, v = 0.2 x 0.16 = 0.032, b = 0.4 / 0.428885
            assert param[0].item() == pytest.approx(1 - 0.5 * 0.932650, abs=1e-6)


@pytest.mark.parametrize("name", ["adamw", "rmsprop"])
def test_warmup_then_cosine_schedule(name):
    """4 warmup steps of 12 from the configured lr: the scheduler's rate at chosen steps equals the
    formula (and the numbers worked out by hand for adamw's 0.003)."""
    optim = {**tiny_config(f"optim={name}")["optim"], "warmup_steps": 4}
    base = optim["lr"]
    lrs = scheduled_lrs(VideoClassifier("a0", "base", CLASSES, optim=optim, steps=12))
    for step in (0, 3, 4, 8, 11):  # first, last of warmup, first of cosine, mid-decay, last
        assert lrs[step] == pytest.approx(lr_by_hand(step, base, 4, 12), rel=1e-12), step
    assert lrs == pytest.approx([lr_by_hand(s, base, 4, 12) for s in range(12)], rel=1e-12)
    if name == "adamw":  # 0.003 x: 1/4, 4/4, cos 0 = 1, (1 + cos pi/2)/2 = 1/2, (1 + cos 7pi/8)/2
        assert [lrs[s] for s in (0, 3, 4, 8)] == pytest.approx([0.00075, 0.003, 0.003, 0.0015], rel=1e-12)
        assert lrs[11] == pytest.approx(0.003 * 0.0380602337, rel=1e-8)


def test_schedule_without_warmup_or_longer_than_training():
    """warmup 0 starts at the full rate; a warmup as long as training is cut to total - 1 steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    factors = [warmup_cosine(optimizer, 0, 10).lr_lambdas[0](s) for s in range(10)]
    assert factors == pytest.approx([lr_by_hand(s, 1.0, 0, 10) for s in range(10)]) and factors[0] == 1.0
    factors = [warmup_cosine(optimizer, 50, 10).lr_lambdas[0](s) for s in range(10)]
    assert factors == pytest.approx([lr_by_hand(s, 1.0, 9, 10) for s in range(10)]) and factors[8] == 1.0


# --- data.clips.train_sampling=random -------------------------------------------------------------


@pytest.fixture()
def two_train_videos(tmp_path):
    """Two whole-video training clips of 20 and 26 frames (one per class), frame i painted 4i."""
    from movinet.data.extract import extract_videos
    from movinet.data.ingest import ingest_labels

    videos = tmp_path / "videos"
    videos.mkdir()
    lengths = {"a.mp4": 20, "b.mp4": 26}
    for name, count in lengths.items():
        write_video(videos / name, gray_frames(count, 32, 32), 10, "libx264")
    (tmp_path / "labels.csv").write_text("filename,label,split\na.mp4,clap,train\nb.mp4,nod,train\n")
    extract_videos(videos, tmp_path / "frames", size=0, progress=False)
    ingest_labels(tmp_path / "labels.csv", tmp_path / "frames", tmp_path / "labels", fractions=(1.0, 0.0, 0.0))
    return tmp_path, lengths


def test_random_sampling_draws_every_valid_window_and_no_other(two_train_videos):
    """Clips of 3 frames 2 apart (span 5): the candidates are every start 0..length-5 of each video; each
    epoch draws len // hop of them without repeats, and over epochs every one comes up. The windows are
    read back from the loaded batches (painted frame numbers, class = video)."""
    from movinet.data.clips import ClipParams
    from movinet.data.datamodule import ClipDataModule
    from movinet.data.dataset import Augment

    root, lengths = two_train_videos
    params = ClipParams(num_frames=3, frame_stride=2)
    data = ClipDataModule(
        root / "frames",
        root / "labels",
        params,
        Augment(crop_size=16),
        batch_size=4,
        train_sampling="random",
        train_hop=4,
    )
    data.setup()
    video_of = {data.classes.index(label): name for name, label in (("a.mp4", "clap"), ("b.mp4", "nod"))}
    valid = {(video, start) for video, count in lengths.items() for start in range(count - 5 + 1)}
    assert {(c.video, c.start) for c in data.datasets["train"].clips} == valid  # 16 + 22 candidates
    per_epoch = len(valid) // 4
    drawn = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(40):
            loader = data.train_dataloader()
            epoch = []
            for clips, labels in loader:
                for clip, label in zip(clips, labels):
                    frames = frame_numbers((clip.permute(1, 2, 3, 0) * 255).numpy())
                    assert frames == [frames[0], frames[0] + 2, frames[0] + 4]  # one window, stride 2
                    epoch.append((video_of[int(label)], frames[0]))
            assert len(loader.sampler) == per_epoch  # 38 // 4 = 9 draws an epoch, ...
            assert len(epoch) == len(set(epoch)) == 8  # ... without repeats; the last, short batch dropped
            drawn += epoch
    assert set(drawn) <= valid  # nothing outside the valid windows
    assert set(drawn) == valid  # and every one of them came up
