"""The deployable model: one MLflow pyfunc that takes videos and answers class probabilities.

Input: a DataFrame (or list) with a ``video`` column, each value a path to a video file or the
base64 of one (what ``/invocations`` receives; paths are refused there, see ``paths_allowed``).
Params: ``per_frame`` (add a JSON timeline per video), ``top_k``. Output: one row per video:
``label``, ``score``, ``top_k`` (JSON), then one probability column per class, and ``per_frame``
on request. Decoded frames go to the ``Predictor`` itself:
``model.unwrap_python_model().predictor.predict(frames)``.

Artifacts: the member checkpoints (one, or two for a temporal ensemble), ``inference.json`` (the
preprocessing config, class names, ensemble offsets) and, for a stream model, its ONNX export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np

from movinet.tracking.clip_model import PACKAGE_DIR, pip_requirements

INFERENCE_FILE = "inference.json"
MAX_UPLOAD_ENV = "MOVINET_MAX_UPLOAD_MB"  # the largest video the served model decodes (default 100, as movinet serve)
DEVICE_ENV = "MOVINET_DEVICE"  # where a loaded video model runs (cpu | cuda | auto); default cpu
RESERVED = ("video", "label", "score", "top_k", "per_frame")


def max_upload_bytes() -> int:
    """The served model's size limit on one video, before its base64 is decoded."""
    return int(float(os.environ.get(MAX_UPLOAD_ENV, "100")) * 2**20)


def paths_allowed() -> bool:
    """File paths as input in a Python session, not behind ``mlflow models serve`` (which sets
    ``_MLFLOW_IS_IN_SERVING_ENVIRONMENT``); ``MOVINET_SERVE_PATHS=1`` allows them there too."""
    if os.environ.get("MOVINET_SERVE_PATHS") == "1":
        return True
    return os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() not in ("true", "1")


class VideoModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from movinet.inference.predictor import Predictor
        from movinet.inference.video_input import Preprocessing

        spec = json.loads(Path(context.artifacts["inference"]).read_text())
        members = [context.artifacts[f"member{i}"] for i in range(len(spec["offsets"]))]
        # `mlflow models serve` passes no options: the device comes from $MOVINET_DEVICE (cpu | cuda | auto)
        device = os.environ.get(DEVICE_ENV, "cpu")
        self.predictor = Predictor.from_checkpoints(
            members, Preprocessing(**spec["preprocessing"]), spec["offsets"], spec["stride"], device
        )

    def predict(self, context, model_input, params=None):
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from movinet.inference.video_input import read_video_arg

        params = params or {}
        allow_paths = paths_allowed()
        per_frame, top_k = bool(params.get("per_frame", False)), int(params.get("top_k", 5))
        if isinstance(model_input, pd.DataFrame):
            if "video" not in model_input.columns:
                raise MlflowException("the input needs a 'video' column (path or base64)", INVALID_PARAMETER_VALUE)
            values = model_input["video"].tolist()
        else:
            values = list(model_input if isinstance(model_input, (list, tuple)) else [model_input])
        rows = []
        for i, value in enumerate(values):
            try:
                if not isinstance(value, str):
                    raise ValueError("expected a string (path or base64)")
                source = read_video_arg(value, allow_paths, max_upload_bytes())
                name = source if isinstance(source, str) else f"video {i}"
                result = self.predictor.predict(source, per_frame=per_frame, name=name)
            except (ValueError, FileNotFoundError) as exc:
                raise MlflowException(f"row {i}: {exc}", INVALID_PARAMETER_VALUE) from None
            row = {
                "label": result.label,
                "score": float(result.probabilities.max()),
                "top_k": json.dumps(result.top(top_k)),
            }
            row.update({c: float(p) for c, p in zip(result.class_names, result.probabilities)})
            if per_frame:
                row["per_frame"] = json.dumps(
                    [
                        {
                            "frame": r["frame"],
                            "time": r["time"],
                            "probabilities": [round(float(p), 6) for p in r["probabilities"]],
                        }
                        for r in result.timeline
                    ]
                )
            rows.append(row)
        return pd.DataFrame(rows)


def video_signature(class_names: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "video")]),
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("double", "score"),
                ColSpec("string", "top_k"),
                *[ColSpec("double", c) for c in class_names],
                ColSpec("string", "per_frame", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("per_frame", "boolean", False), ParamSpec("top_k", "long", 5)]),
    )


def example_video(prep, seconds: float = 1.0) -> str:
    """A short generated mp4 as base64: the input example stored with the model."""
    import base64
    import tempfile

    from movinet.data.demo import write_video

    fps = int(prep.fps or 15)
    frames = np.random.default_rng(0).integers(0, 255, (max(2, int(fps * seconds)), 96, 128, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.mp4"
        write_video(path, frames, fps, "libx264")
        return base64.b64encode(path.read_bytes()).decode()


def log_video_model(
    members: list[Path],
    class_names: list[str],
    prep,
    offsets: list[int],
    stride: int,
    name: str = "video_model",
    registered_model_name: str | None = None,
    onnx: Path | None = None,
    metadata: dict | None = None,
):
    """Log inside the active run (and register when a name is given); returns MLflow's ModelInfo."""
    import tempfile

    import pandas as pd

    clash = sorted(set(class_names) & set(RESERVED))
    if clash:
        raise ValueError(f"class names {clash} clash with the model's output columns")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / INFERENCE_FILE
        spec.write_text(
            json.dumps(
                {
                    "preprocessing": prep.to_dict(),
                    "class_names": class_names,
                    "offsets": list(offsets),
                    "stride": stride,
                },
                indent=1,
            )
        )
        artifacts = {"inference": str(spec), **{f"member{i}": str(p) for i, p in enumerate(members)}}
        if onnx is not None:
            artifacts["onnx"] = str(onnx)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=VideoModel(),
            artifacts=artifacts,
            code_paths=[str(PACKAGE_DIR)],
            signature=video_signature(class_names),
            input_example=(pd.DataFrame({"video": [example_video(prep)]}), {"per_frame": False, "top_k": 3}),
            pip_requirements=pip_requirements() + _serving_requirements(),
            registered_model_name=registered_model_name,
            metadata={
                "class_names": class_names,
                "preprocessing": prep.to_dict(),
                "ensemble_offsets": list(offsets),
                **(metadata or {}),
            },
        )


def _serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("decord", "av", "pandas", "pyyaml")]
