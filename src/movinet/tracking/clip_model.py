"""MLflow models: a trained checkpoint as a pyfunc whose input shapes stay free.

Not MLflow's default PyTorch format (pt2, via torch.export), which freezes T/H/W to those of the
input example: a ``PythonModel`` keeps our checkpoint as an artifact and the ``movinet`` package as
code, so the logged model loads anywhere torch is installed and takes clips of any length and size.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/movinet, shipped as the model's code


def pip_requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]


class ClipClassifier(mlflow.pyfunc.PythonModel):
    """Input: clips ``(B, 3, T, H, W)`` float32 RGB in [0, 1]. Output: class probabilities ``(B, C)``."""

    def load_context(self, context) -> None:
        from movinet.models import optimize_for_inference
        from movinet.models.weights import load_checkpoint

        model, payload = load_checkpoint(context.artifacts["checkpoint"])
        self.model = optimize_for_inference(model)
        self.class_names = payload.get("class_names")

    def predict(self, context, model_input, params=None):
        import torch

        if isinstance(model_input, dict):  # a named tensor input arrives as {"clips": array}
            model_input = model_input["clips"]
        clips = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.inference_mode():
            return torch.softmax(self.model(clips), dim=1).numpy()


def clip_signature(num_classes: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1, -1), "clips")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities")]),
    )


def log_clip_model(checkpoint: Path, num_classes: int, example: np.ndarray, name: str = "model"):
    """Log inside the active run; returns MLflow's ModelInfo."""
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=ClipClassifier(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(PACKAGE_DIR)],
        signature=clip_signature(num_classes),
        input_example=example.astype(np.float32),
        pip_requirements=pip_requirements(),
    )


def find_checkpoint(folder: Path) -> Path:
    """Our checkpoint inside a downloaded MLflow model or run folder."""
    from movinet.models.weights import CHECKPOINT_FORMAT, read_checkpoint

    for path in sorted(folder.rglob("*.pt")):
        try:
            if read_checkpoint(path)[0].get("format") == CHECKPOINT_FORMAT:
                return path
        except ValueError:
            continue
    raise FileNotFoundError(f"no movinet checkpoint in {folder}")


def download_checkpoint(uri: str, tracking: str) -> Path:
    """``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/model`` -> local checkpoint path."""
    import tempfile

    mlflow.set_tracking_uri(tracking)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp()))
    return find_checkpoint(folder)
