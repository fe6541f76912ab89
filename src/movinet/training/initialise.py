"""Where a run's weights start: from scratch, Kinetics-600 weights with a new head, or a trained model.

``model.pretrained``: the published Kinetics-600 weights of the same arch and variant; every layer
but the last is loaded. ``train.init``: a trained model to continue from (an MLflow model URI or a
checkpoint file); it must be the same arch and variant (refused by name otherwise), and with other
classes its last layer is left new.
"""

from __future__ import annotations

from movinet.config import Config, resolve_path
from movinet.models import MoViNet, build, load_pretrained
from movinet.models.weights import read_checkpoint


def initialise(model: MoViNet, classes: list[str], cfg: Config, tracking: str) -> str:
    """Load the starting weights into ``model``; returns a note for the run's tags."""
    init, pretrained = cfg.train.init, cfg.model.pretrained
    if init:
        if init.startswith(("models:/", "runs:/")):
            from movinet.tracking.clip_model import download_checkpoint

            path = download_checkpoint(init, tracking)
        else:
            path = resolve_path(init)
        payload, _ = read_checkpoint(path)
        arch, variant = payload.get("arch"), payload.get("variant")
        if (arch, variant) != (model.spec.arch, model.variant):
            raise ValueError(
                f"{init} is a MoViNet-{str(arch).upper()} {variant} model; this run builds "
                f"MoViNet-{model.spec.arch.upper()} {model.variant} (set model={arch})"
            )
        if payload.get("class_names") == classes:
            load_pretrained(model, payload)
        else:  # same backbone, other classes
            load_all_but_last_layer(model, payload, payload["num_classes"])
        return f"continued from {init}"
    if pretrained:
        load_all_but_last_layer(model, resolve_path(pretrained), 600)
        return f"Kinetics-600 weights from {pretrained}, new {len(classes)}-class head"
    return "from scratch"


def load_all_but_last_layer(model: MoViNet, source, num_classes: int) -> None:
    """Load weights made for ``num_classes`` outputs, keeping the model's own last layer."""
    donor = load_pretrained(build(model.spec.arch, model.variant, num_classes), source)
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("classifier.logits")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    kept = [k for k in missing if not k.startswith("classifier.logits")]
    if kept or unexpected:  # strict=False must only spare the last layer, never hide a mismatch
        raise ValueError(
            f"weights do not fit MoViNet-{model.spec.arch.upper()} {model.variant}: "
            f"missing {kept[:5]}, unexpected {unexpected[:5]}"
        )
