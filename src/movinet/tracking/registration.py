"""Stage register: an evaluated model (single or ensemble) becomes a new registered model version.

Reads what training and evaluation left in ``models/<source>/`` (``config.yaml``, ``run.json``,
``model.pt`` or ``ensemble.json`` with its members) and ``metrics/<source>.json``; logs the video
pyfunc into the model's own MLflow run, registers it, tags the version with its test metrics, and
moves the champion alias if the version beats the current champion (``register.promote``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from movinet.config import Config, to_config
from movinet.inference.ensemble import ENSEMBLE_FILE
from movinet.tracking.client import TrackingClient, retry
from movinet.tracking.promotion import promote
from movinet.tracking.runs import RUN_FILE
from movinet.tracking.store import tracking_uri


def model_parts(model_dir: Path) -> tuple[list[Path], list[int], int]:
    """(member checkpoints, offsets, stride) of a trained model or ensemble folder."""
    spec_file = model_dir / ENSEMBLE_FILE
    if spec_file.is_file():
        spec = json.loads(spec_file.read_text())
        return [model_dir / m for m in spec["members"]], list(spec["offsets"]), int(spec["stride"])
    return [model_dir / "model.pt"], [0], 1


def _stream_onnx(members: list[Path], crop_size: int, folder: Path) -> Path | None:
    """The ONNX export of a single stream model (ensembles and base models have none)."""
    from movinet.inference.onnx_export import export_stream_onnx
    from movinet.models.weights import load_checkpoint

    if len(members) != 1:
        return None
    model, payload = load_checkpoint(members[0])
    if not model.causal:
        return None
    return export_stream_onnx(
        model, folder / "stream.onnx", image_size=crop_size, class_names=payload.get("class_names")
    )


def _evaluated(model_dir: Path, metrics_file: Path, source: str) -> tuple[str, dict, Config]:
    """(MLflow run id, test metrics, run config) that training and evaluation left for ``source``."""
    for needed in (model_dir / RUN_FILE, model_dir / "config.yaml", metrics_file):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: train and evaluate {source!r} first")
    run_id = json.loads((model_dir / RUN_FILE).read_text())["mlflow_run_id"]
    run_cfg = to_config(yaml.safe_load((model_dir / "config.yaml").read_text()))
    return run_id, json.loads(metrics_file.read_text()), run_cfg


def register_evaluated(cfg: Config, root: Path, source: str) -> dict:
    """Log ``models/<source>`` as the video pyfunc in its own run, register a version, tag it with its
    test metrics and promote it on merit (``register.promote``)."""
    import mlflow

    from movinet.inference.video_input import Preprocessing
    from movinet.models.weights import read_checkpoint
    from movinet.tracking.video_model import log_video_model

    model_dir, metrics_file = root / "models" / source, root / "metrics" / f"{source}.json"
    run_id, metrics, run_cfg = _evaluated(model_dir, metrics_file, source)
    prep = Preprocessing.from_config(run_cfg)
    members, offsets, stride = model_parts(model_dir)
    class_names = read_checkpoint(members[0])[0]["class_names"]
    name, metric = cfg.register.name, cfg.register.metric
    scores = {k: v for k, v in metrics.items() if isinstance(v, float)}
    if cfg.register.promote and metric not in scores:  # before any version exists
        raise ValueError(f"{metrics_file} has no {metric!r} to promote on (register.metric)")

    uri = tracking_uri(cfg.mlflow.tracking_uri, root)
    mlflow.set_tracking_uri(uri)
    client = TrackingClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = _stream_onnx(members, prep.crop_size, Path(tmp))
        with mlflow.start_run(run_id=run_id):
            info = retry(
                lambda: log_video_model(  # retried: a locked store at worst logs it twice
                    members, class_names, prep, offsets, stride, onnx=onnx, metadata={"source": source}
                )
            )
    version = str(mlflow.register_model(info.model_uri, name).version)  # once: a retry could add a version
    tags = {k: f"{v:.6g}" for k, v in scores.items()}
    tags.update({"source": source, "members": str(len(members)), "onnx": "yes" if onnx else "no"})
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    result = {"name": name, "version": version, "source": source, "model_uri": info.model_uri, "metrics": scores}
    if cfg.register.promote:
        decision = promote(client, name, version, metric)
        result.update(promoted=decision.promoted, promotion=decision.message)
    return result
