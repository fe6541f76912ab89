"""The evaluation stage in process, on a hand-made frame cache and a random model: its metrics, plot
files and MLflow logs equal the metrics of the model applied by hand to the test clips."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import randomize, tiny_config, write_frame_cache, write_label_files
from movinet.config import to_config
from movinet.data.splits import Stretch
from movinet.models import build, save_checkpoint
from movinet.tracking.runs import write_run_record
from movinet.training import evaluate as evaluation

CLASSES = ["jump", "run", "walk"]
VIDEOS = {f"{c}{i}.mp4": c for c in CLASSES for i in range(2)}  # two test videos a class, 12 frames each


@pytest.fixture
def project(tmp_path):
    """``data/frames`` and ``data/labels`` by hand (random frames, whole-video labels, all test) and
    ``models/m`` with a random A0 base model and its config (T = 4, stride 2, 2 clips a video)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("# marks the project root\n")
    rng = np.random.default_rng(0)
    levels = dict(zip(VIDEOS, (0, 200, 60, 240, 120, 180)))  # videos differ in brightness, frames in noise
    frames = {v: (levels[v] * 0.85 + rng.integers(0, 40, (12, 32, 32, 3))).astype(np.uint8) for v in VIDEOS}
    write_frame_cache(tmp_path / "data" / "frames", {v: (list(range(12)), 12) for v in VIDEOS}, 32, frames)
    labels = {v: dict.fromkeys(range(12), c) for v, c in VIDEOS.items()}
    write_label_files(tmp_path / "data" / "labels", labels, [Stretch(v, "test", 0, 11) for v in VIDEOS], CLASSES)
    cfg = tiny_config(
        "data.transform.crop_size=32",
        "data.clips.num_frames=4",
        "data.clips.frame_stride=2",
        "data.clips.eval_clips_per_video=2",
        "data.loader.batch_size=3",
    )
    model_dir = tmp_path / "models" / "m"
    model = randomize(build("a0", "base", 3), seed=3)
    _center_the_head(model, frames)
    save_checkpoint(model, model_dir / "model.pt", class_names=CLASSES, extra={"config": cfg})
    (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, model_dir, model, frames


def _center_the_head(model, frames) -> None:
    """A random model answers nearly the same class for every clip; centred on the test clips'
    mean feature and sharpened, its answers differ from clip to clip, so the metrics mean something."""
    logits = model.classifier.logits
    seen = []
    handle = logits.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    _by_hand(model, frames)
    handle.remove()
    with torch.no_grad():
        logits.weight.mul_(1000)
        logits.bias.copy_(-logits.weight @ seen[0].mean(0))


def _by_hand(model, frames) -> tuple[torch.Tensor, torch.Tensor]:
    """Each test video's two clips (12 frames, span 7: starts 0 and 5), frames start + 0, 2, 4, 6."""
    clips, labels = [], []
    for video in sorted(VIDEOS):
        for start in (0, 5):
            x = torch.from_numpy(frames[video][start : start + 7 : 2]).permute(3, 0, 1, 2).float() / 255
            clips.append(x)
            labels.append(CLASSES.index(VIDEOS[video]))
    with torch.no_grad():
        return model(torch.stack(clips)), torch.tensor(labels)


def _metrics_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> tuple[dict, list[dict], list[list[int]]]:
    """Accuracy, macro F1, the per-class table and the confusion matrix, counted in numpy."""
    predicted, actual = logits.argmax(1).numpy(), labels.numpy()
    matrix = np.zeros((3, 3), dtype=int)
    np.add.at(matrix, (actual, predicted), 1)
    table, f1s = [], []
    for c, name in enumerate(CLASSES):
        tp, fp, fn = matrix[c, c], matrix[:, c].sum() - matrix[c, c], matrix[c].sum() - matrix[c, c]
        precision, recall = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        table.append(
            {"class": name, "precision": f"{precision:.4g}", "recall": f"{recall:.4g}", "support": matrix[c].sum()}
        )
    metrics = {"test_acc": float((predicted == actual).mean()), "test_macro_f1": float(np.mean(f1s)), "test_clips": 12}
    return metrics, table, matrix.tolist()


def test_the_stage_writes_and_logs_the_metrics_of_the_test_clips(project, monkeypatch):
    root, model_dir, model, frames = project
    uri = f"sqlite:///{root / 'team.db'}"  # the run's config names its store; the environment names another
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e", artifact_location=(root / "art").as_uri()))
    write_run_record(model_dir, {"mlflow_run_id": run.info.run_id})
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["mlflow"]["tracking_uri"] = uri
    (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'elsewhere.db'}")
    dirs = root / "metrics", root / "plots", root / "reports"
    metrics = evaluation.evaluate(model_dir, "m", root, *dirs)

    logits, labels = _by_hand(model, frames)
    expected, per_class, matrix = _metrics_by_hand(logits, labels)
    assert len(set(logits.argmax(1).tolist())) > 1  # the answers differ from clip to clip
    assert metrics == pytest.approx(expected, abs=1e-6)
    assert json.loads((root / "metrics" / "m.json").read_text()) == pytest.approx(expected, abs=1e-6)
    with open(root / "plots" / "m" / "confusion.csv", newline="") as f:
        rows = [(r["actual"], r["predicted"]) for r in csv.DictReader(f)]
    assert rows == [(CLASSES[a], CLASSES[p]) for a, p in zip(labels.tolist(), logits.argmax(1).tolist())]
    with open(root / "plots" / "m" / "per_class.csv", newline="") as f:
        table = [
            {
                **r,
                "precision": f"{float(r['precision']):.4g}",
                "recall": f"{float(r['recall']):.4g}",
                "support": int(r["support"]),
            }
            for r in csv.DictReader(f)
        ]
    assert table == per_class
    assert (root / "reports" / "m" / "index.html").is_file()

    logged = client.get_run(run.info.run_id).data.metrics
    assert logged == pytest.approx({k: v for k, v in expected.items() if isinstance(v, float)}, abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/test_confusion_matrix.csv",
        "evaluation/test_per_class.csv",
        "evaluation/index.html",
    } <= artifacts
    matrix_file = client.download_artifacts(run.info.run_id, "evaluation/test_confusion_matrix.csv", str(root))
    with open(matrix_file, newline="") as f:
        assert [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]] == matrix


def test_a_model_whose_classes_differ_from_the_data_is_refused(project):
    root, model_dir, model, _ = project
    save_checkpoint(model, model_dir / "model.pt", class_names=["jump", "run", "swim"])
    with pytest.raises(ValueError, match=r"models/m: the model's classes \['jump', 'run', 'swim'\] differ from"):
        evaluation.predict_split(model_dir, to_config(yaml.safe_load((model_dir / "config.yaml").read_text())), root)


def test_an_empty_test_split_is_an_error(project):
    root, model_dir, _, _ = project
    cfg = to_config(yaml.safe_load((model_dir / "config.yaml").read_text()))
    splits = root / "data" / "labels" / "splits.csv"
    splits.write_text(splits.read_text().replace(",test,", ",train,"))
    with pytest.raises(ValueError, match="^the test split has no clips$"):
        evaluation.predict_split(model_dir, cfg, root)


@pytest.mark.parametrize(
    "accelerator,asked", [("gpu", "auto"), ("cuda", "auto"), ("auto", "auto"), ("cpu", "cpu"), ("mps", "cpu")]
)
def test_evaluation_runs_where_the_config_trains(monkeypatch, accelerator, asked):
    seen = []
    monkeypatch.setattr(evaluation, "resolve_device", lambda device: seen.append(device) or torch.device("cpu"))
    cfg = to_config(tiny_config(f"trainer.accelerator={accelerator}"))
    assert evaluation.evaluation_device(cfg) == torch.device("cpu") and seen == [asked]
