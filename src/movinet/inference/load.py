"""Where a predictor comes from: a registered or logged MLflow model, or a checkpoint file.

``models:/<name>@champion``, ``models:/<name>/<version>``, ``runs:/<id>/video_model`` or a local
MLflow model folder load the video pyfunc (its artifacts carry the checkpoints and preprocessing);
a ``.pt`` checkpoint written by training carries its config, from which the preprocessing follows;
a ``.onnx`` stream step exported by ``movinet export onnx`` (fp32 or ``--int8``) carries it too and
runs with onnxruntime (``OnnxPredictor``).
"""

from __future__ import annotations

from pathlib import Path

from movinet.inference.batching import in_passing_thread
from movinet.inference.predictor import Predictor
from movinet.inference.video_input import Preprocessing


def load_predictor(uri: str, tracking_uri: str | None = None, device: str = "cpu") -> Predictor:
    """``tracking_uri``: the store that resolves ``models:/`` and ``runs:/`` (MLflow's own default when
    None); the caller picks it, so inference stays independent of the tracking package. ``device``:
    ``cpu``, ``cuda`` or ``auto`` (``movinet.models.device``). The loading runs on a passing thread,
    so the caller (``movinet serve``'s main thread) keeps no OpenMP pool (``in_passing_thread``)."""
    return in_passing_thread(_load, uri, tracking_uri, device)


def _load(uri: str, tracking_uri: str | None, device: str) -> Predictor:
    path = Path(uri)
    if path.suffix == ".onnx":
        from movinet.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path, device)
    if path.suffix == ".pt" and path.is_file():
        from movinet.models.weights import read_checkpoint

        payload, _ = read_checkpoint(path)
        config = payload.get("config")
        if not config:
            raise ValueError(f"{path} carries no training config to take the preprocessing from")
        return Predictor.from_checkpoints([path], Preprocessing.from_config(config), device=device)
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MlflowException / OSError: name what was asked for
        raise ValueError(f"cannot load model {uri!r}: {str(exc).splitlines()[0][:300]}") from None
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "predictor"):
        raise ValueError(f"{uri} is not a movinet video model (register one with the register stage)")
    return python_model.predictor.to(device)
