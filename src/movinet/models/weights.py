"""Pretrained weights: the public Kinetics-600 files, their key layout, and our own checkpoints.

Two formats load into a model built with :func:`movinet.models.build`:

* the PyTorch port's published state dicts (Atze00/MoViNet-pytorch ``weights/modelA{0..5}_statedict_v3``
  and ``modelA{0,1,2}_stream_statedict_v3``, converted from TF Hub v3): keys such as
  ``blocks.b0_l0.deep.conv_1.conv3d.weight``; the stream files hold (2+1)-D ``conv2d`` kernels;
* our checkpoint: ``{"format": "movinet-checkpoint/1", "arch", "variant", "num_classes",
  "class_names", "state_dict"}`` written by :func:`save_checkpoint`.

Files are read with ``torch.load(weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import os
import re
import urllib.error
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor
from torch.hub import download_url_to_file

from movinet.files import atomic_path
from movinet.models.movinet import MoViNet
from movinet.models.specs import SPECS

CHECKPOINT_FORMAT = "movinet-checkpoint/1"

_PORT_URL = "https://github.com/Atze00/MoViNet-pytorch/raw/main/weights/{file}"
PRETRAINED_FILES: dict[tuple[str, str], str] = {
    **{(f"a{i}", "base"): f"modelA{i}_statedict_v3" for i in range(6)},
    **{(f"a{i}", "stream"): f"modelA{i}_stream_statedict_v3" for i in range(3)},
}


@cache
def kinetics600_classes() -> tuple[str, ...]:
    """The 600 Kinetics-600 class names, in the order of the pretrained classifier's outputs."""
    text = resources.files("movinet.models").joinpath("kinetics600_classes.txt").read_text()
    return tuple(line for line in text.splitlines() if line)


# --- the port's key layout -------------------------------------------------------------------

# (our module path, the port's module path); "{conv}" is conv3d (base) or conv2d (stream).
_PORT_MODULES = [
    (r"stem\.conv", r"conv1.conv_1.{conv}"),
    (r"stem\.bn", r"conv1.conv_1.norm"),
    (r"head\.conv", r"conv7.conv_1.{conv}"),
    (r"head\.bn", r"conv7.conv_1.norm"),
    (r"classifier\.hidden", r"classifier.0.conv_1.{conv}"),
    (r"classifier\.logits", r"classifier.3.conv_1.{conv}"),
    (r"blocks\.(\w+)\.expand\.conv", r"blocks.\1.expand.conv_1.{conv}"),
    (r"blocks\.(\w+)\.expand\.bn", r"blocks.\1.expand.conv_1.norm"),
    (r"blocks\.(\w+)\.feature\.conv", r"blocks.\1.deep.conv_1.{conv}"),
    (r"blocks\.(\w+)\.feature\.bn", r"blocks.\1.deep.conv_1.norm"),
    (r"blocks\.(\w+)\.temporal\.conv", r"blocks.\1.deep.conv_2.conv2d"),
    (r"blocks\.(\w+)\.temporal\.bn", r"blocks.\1.deep.conv_2.norm"),
    (r"blocks\.(\w+)\.se\.reduce", r"blocks.\1.se.fc1.conv_1.{conv}"),
    (r"blocks\.(\w+)\.se\.expand", r"blocks.\1.se.fc2.conv_1.{conv}"),
    (r"blocks\.(\w+)\.project\.conv", r"blocks.\1.project.conv_1.{conv}"),
    (r"blocks\.(\w+)\.project\.bn", r"blocks.\1.project.conv_1.norm"),
    # The port's shortcut is a Sequential: index 0 is the avg-pool when the layer is strided.
    (r"blocks\.(\w+)\.skip\.proj\.conv", r"blocks.\1.res.{skip}.conv_1.{conv}"),
    (r"blocks\.(\w+)\.skip\.proj\.bn", r"blocks.\1.res.{skip}.conv_1.norm"),
]


def _port_key(key: str, model: MoViNet) -> str | None:
    """The port's name for one of our state-dict keys (None: the port has no such tensor)."""
    module, _, leaf = key.rpartition(".")
    if leaf == "rezero":
        return f"{module}.alpha"
    conv = "conv2d" if model.causal else "conv3d"
    for ours, theirs in _PORT_MODULES:
        match = re.fullmatch(ours, module)
        if match:
            skip = ""
            if "{skip}" in theirs:
                skip = "1" if model.blocks[match.group(1)].skip.stride > 1 else "0"
            return f"{match.expand(theirs).format(conv=conv, skip=skip)}.{leaf}"
    return None  # e.g. the positional-encoding scale of A3–A5 stream, which the port lacks


def to_port_state_dict(model: MoViNet) -> dict[str, Tensor]:
    """Our weights in the port's names and tensor layouts (the inverse of loading a port file)."""
    out = {}
    for key, value in model.state_dict().items():
        port = _port_key(key, model)
        if port is None:
            continue
        if ".conv2d." in port and value.dim() == 5:
            # (2+1)-D port convs are Conv2d: spatial (C, I, kh, kw), temporal (C, 1, kt, 1).
            value = value[..., 0] if ".conv_2." in port else value[:, :, 0]
        elif value.dim() == 2:  # our Linear layers are 1x1(x1) convs in the port
            value = value.reshape(*value.shape, *([1] * (2 if model.causal else 3)))
        out[port] = value.clone()
    return out


def _from_port_state_dict(state: Mapping[str, Tensor], model: MoViNet, source: str) -> dict[str, Tensor]:
    _refuse_other_model(state, model, source)
    out, used = {}, set()
    for key, ours in model.state_dict().items():
        port = _port_key(key, model)
        used.add(port)
        if port is None:
            out[key] = ours  # keep our own initial value (pos-enc scale starts at 0)
            continue
        if port not in state:
            if key.endswith("num_batches_tracked"):
                out[key] = ours
                continue
            raise ValueError(f"{source}: missing tensor {port!r} for {_describe(model)}")
        value = state[port]
        if value.numel() != ours.numel():
            hint = ""
            if key.startswith("classifier.logits"):
                hint = (
                    f" (the file has {value.shape[0]} classes: build with num_classes="
                    f"{value.shape[0]}, load, then model.reset_classifier({model.num_classes}))"
                )
            raise ValueError(
                f"{source}: tensor {port!r} has shape {tuple(value.shape)}, {_describe(model)} needs "
                f"{tuple(ours.shape)}{hint}"
            )
        out[key] = value.reshape(ours.shape).to(ours.dtype)
    unexpected = sorted(set(state) - used)
    if unexpected:  # the port loads its files strictly: a tensor we would not load means another model
        raise ValueError(f"{source}: unexpected tensor(s) {unexpected[:5]} for {_describe(model)}")
    return out


def _identify_port(state: Mapping[str, Tensor]) -> tuple[str | None, str]:
    """Which arch/variant a port state dict was made for (by its layer names and widths)."""
    variant = "stream" if any(".conv2d." in k for k in state) else "base"
    layers: dict[int, set[int]] = {}
    for key in state:
        match = re.match(r"blocks\.b(\d+)_l(\d+)\.", key)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    counts = [len(layers[i]) for i in sorted(layers)]
    stem = state.get(f"conv1.conv_1.{'conv2d' if variant == 'stream' else 'conv3d'}.weight")
    for arch, spec in SPECS.items():
        if counts == [len(b.layers) for b in spec.blocks] and (stem is None or stem.shape[0] == spec.stem):
            return arch, variant
    return None, variant


def _refuse_other_model(state: Mapping[str, Tensor], model: MoViNet, source: str) -> None:
    arch, variant = _identify_port(state)
    if arch is None:
        raise ValueError(f"{source} holds weights of no known MoViNet ({variant}), not {_describe(model)}")
    if (arch, variant) != (model.spec.arch, model.variant):
        raise ValueError(
            f"{source} holds MoViNet-{arch.upper()} {variant} weights, but the model is "
            f"{_describe(model)}: build the model with build({arch!r}, {variant!r})"
        )


def _describe(model: MoViNet) -> str:
    return f"MoViNet-{model.spec.arch.upper()} {model.variant}"


# --- our checkpoint format -------------------------------------------------------------------


def save_checkpoint(
    model: MoViNet,
    path: str | os.PathLike,
    class_names: list[str] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write our checkpoint atomically (temp file + rename): never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": model.spec.arch,
        "variant": model.variant,
        "num_classes": model.num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "state_dict": model.state_dict(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(source: str | os.PathLike | Mapping) -> tuple[dict, str]:
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    except Exception as exc:  # a truncated download, an HTML page, a pickle with code...
        raise ValueError(f"{path} is not a readable weights file: {exc}") from exc


def load_checkpoint(source: str | os.PathLike | Mapping) -> tuple[MoViNet, dict]:
    """Build the model our checkpoint describes and load it; returns ``(model, checkpoint)``."""
    from movinet.models import build

    payload, name = read_checkpoint(source)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{name} is not a movinet checkpoint (it has no arch/variant/classes)")
    model = build(payload["arch"], payload["variant"], payload["num_classes"])
    return load_pretrained(model, payload), payload


def load_pretrained(model: MoViNet, source: str | os.PathLike | Mapping) -> MoViNet:
    """Load the port's published weights or our checkpoint into ``model`` (in place; returned).

    Refuses, by name, weights made for another arch or variant.
    """
    payload, name = read_checkpoint(source)
    if payload.get("format") == CHECKPOINT_FORMAT:
        arch, variant = payload["arch"], payload["variant"]
        if (arch, variant) != (model.spec.arch, model.variant):
            raise ValueError(
                f"{name} holds MoViNet-{arch.upper()} {variant} weights, but the model is "
                f"{_describe(model)}: build the model with build({arch!r}, {variant!r})"
            )
        state = payload["state_dict"]
        if payload["num_classes"] != model.num_classes:
            raise ValueError(
                f"{name} has a {payload['num_classes']}-class classifier, the model has "
                f"{model.num_classes}: build with num_classes={payload['num_classes']}, load, "
                "then model.reset_classifier(...)"
            )
    elif any(k.startswith("conv1.conv_1.") for k in payload):
        state = _from_port_state_dict(payload, model, name)
    elif any(k.startswith("stem.conv.") for k in payload):
        state = payload  # a bare state dict of our own model
    else:
        raise ValueError(f"{name} is neither a MoViNet port state dict nor a movinet checkpoint")
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise ValueError(f"{name} does not fit {_describe(model)}: missing {missing}, unexpected {extra}")
    model.load_state_dict(state)
    return model


# --- download --------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloaded weights live: ``$MOVINET_HOME/weights`` or ``~/.cache/movinet/weights``."""
    root = os.environ.get("MOVINET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "movinet"
    )
    return Path(root) / "weights"


def pretrained_url(arch: str, variant: str) -> str:
    """The file's public URL; ``$MOVINET_WEIGHTS_URL`` replaces the folder (a mirror, a proxy)."""
    try:
        file = PRETRAINED_FILES[(arch.lower(), variant)]
        mirror = os.environ.get("MOVINET_WEIGHTS_URL")
        return f"{mirror.rstrip('/')}/{file}" if mirror else _PORT_URL.format(file=file)
    except KeyError:
        known = ", ".join(f"{a} {v}" for a, v in PRETRAINED_FILES)
        raise ValueError(f"no published Kinetics-600 weights for {arch} {variant} (known: {known})") from None


def download(arch: str, variant: str = "base", force: bool = False, progress: bool = False) -> Path:
    """Fetch the published Kinetics-600 weights once into the cache and return the file's path.

    The file is checked (it must load as the right model's weights) before it is moved into place.
    """
    url = pretrained_url(arch, variant)
    target = cache_dir() / PRETRAINED_FILES[(arch.lower(), variant)]
    if target.is_file() and not force:
        return target
    from movinet.models import build

    try:
        with atomic_path(target) as tmp:
            download_url_to_file(url, str(tmp), progress=progress)
            load_pretrained(build(arch, variant), tmp)  # checked before it takes the target's place
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"could not download {url}: {exc}. Without network access, download the file "
            f"elsewhere and put it at {target} (or pass its path as model.pretrained)"
        ) from exc
    return target
