"""Promotion in a real MLflow registry (SQLite store): rejected when worse, accepted when better,
forced on request; every decision recorded on the version."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("reg", artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model("m")
    for acc in ("0.80", "0.70", "0.90"):
        run = client.create_run(experiment)
        version = client.create_model_version("m", (tmp_path / "art" / run.info.run_id).as_uri(), run.info.run_id)
        client.set_model_version_tag("m", version.version, "test_acc", acc)
    return uri, client


def cli(uri, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "movinet.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def champion(client):
    return str(client.get_model_version_by_alias("m", "champion").version)


def test_promote_first_worse_better_forced(registry):
    uri, client = registry
    first = cli(uri, "promote", "m", "--version", "1")
    assert first.returncode == 0 and "m v1 promoted: first champion (test_acc 0.8000)" in first.stdout
    assert champion(client) == "1"

    worse = cli(uri, "promote", "m", "--version", "2")
    assert worse.returncode == 1
    assert "m v2 rejected: test_acc 0.7000 is not better than 0.8000 of v1" in worse.stdout
    assert champion(client) == "1"
    assert client.get_model_version("m", "2").tags["promotion"].startswith("rejected")

    better = cli(uri, "promote", "m")  # the latest version, v3
    assert better.returncode == 0 and "m v3 promoted: test_acc 0.9000 > 0.8000 of v1" in better.stdout
    assert champion(client) == "3"

    forced = cli(uri, "promote", "m", "--version", "2", "--force")
    assert forced.returncode == 0 and "forced over v3" in forced.stdout
    assert champion(client) == "2"

    listing = cli(uri, "models", "m")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0] == "m" and lines[2].startswith("  v2 @champion test_acc=0.70 promoted: forced")


def test_promote_errors_are_clear(registry):
    uri, _ = registry
    missing = cli(uri, "promote", "nosuch")
    assert missing.returncode == 2 and "no registered model named 'nosuch'" in missing.stderr
    bad = cli(uri, "promote", "m", "--version", "9")
    assert bad.returncode == 2 and "m has no version 9 (versions: 1, 2, 3)" in bad.stderr


def test_the_gate_fails_closed_when_the_champion_cannot_be_read(registry, monkeypatch):
    """A store error while reading the champion is an error, never "no champion": a worse version
    must not take the alias because the better one's could not be read."""
    from movinet.tracking.client import TrackingClient
    from movinet.tracking.promotion import promote

    uri, client = registry
    tracking = TrackingClient(uri)
    promote(tracking, "m", "3")  # v3 (0.90) is the champion

    def unreachable(name):
        raise ConnectionError("the tracking server did not answer")

    monkeypatch.setattr(tracking.mlflow, "get_registered_model", unreachable)
    with pytest.raises(ConnectionError, match="did not answer"):
        promote(tracking, "m", "2")  # v2 (0.70) is worse
    assert champion(client) == "3" and "promotion" not in client.get_model_version("m", "2").tags


def test_register_stream_model_attaches_onnx_and_promotes_first(tmp_path):
    """The register stage on a stream model: one video pyfunc with its ONNX export, the test
    metrics as version tags, champion as the first version; loaded back by alias, it classifies."""
    import json

    import mlflow
    import numpy as np
    import onnx
    import yaml

    from conftest import randomize, tiny_config, write_video
    from movinet.config import to_config
    from movinet.inference.load import load_predictor
    from movinet.models import build, save_checkpoint
    from movinet.tracking.registration import register_evaluated

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("reg", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    cfg = tiny_config("data.extract.size=40", "register.name=streamy", "mlflow.experiment=reg")
    cfg["mlflow"]["tracking_uri"] = uri
    model_dir = tmp_path / "models" / "video"
    model_dir.mkdir(parents=True)
    save_checkpoint(
        randomize(build("a0", "stream", 2)), model_dir / "model.pt", class_names=["x", "y"], extra={"config": cfg}
    )
    (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (model_dir / "run.json").write_text(json.dumps({"mlflow_run_id": run.info.run_id}))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "video.json").write_text(json.dumps({"test_acc": 0.75, "test_clips": 8}))

    typo = {**cfg, "register": {**cfg["register"], "metric": "test_acuracy"}}
    with pytest.raises(ValueError, match="video.json has no 'test_acuracy'"):
        register_evaluated(to_config(typo), tmp_path, "video")
    assert not client.search_registered_models()  # refused before any version was made

    result = register_evaluated(to_config(cfg), tmp_path, "video")
    assert result["version"] == "1" and result["promoted"] and "first champion" in result["promotion"]
    version = client.get_model_version("streamy", "1")
    assert version.tags["test_acc"] == "0.75" and version.tags["onnx"] == "yes"
    mlflow.set_tracking_uri(uri)
    mlflow.artifacts.download_artifacts("models:/streamy@champion", dst_path=str(tmp_path / "dl"))
    graphs = list((tmp_path / "dl").rglob("*.onnx"))
    assert len(graphs) == 1 and onnx.load(str(graphs[0])).graph.input[0].name == "frames"

    video = tmp_path / "clip.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3), dtype=np.uint8), 10, "libx264")
    predictor = load_predictor("models:/streamy@champion", uri)
    assert predictor.streaming and predictor.class_names == ["x", "y"]
    assert len(predictor.predict(video, per_frame=True).timeline) == 20


def test_the_video_model_runs_on_the_device_movinet_device_names(tmp_path, monkeypatch):
    """`mlflow models serve` takes no options: $MOVINET_DEVICE picks the device; a missing GPU is an error."""
    import json
    from types import SimpleNamespace

    import torch

    from movinet.inference.video_input import Preprocessing
    from movinet.models import build, save_checkpoint
    from movinet.tracking.video_model import DEVICE_ENV, VideoModel

    prep = Preprocessing(fps=10, size=40, crop_size=32, num_frames=4, frame_stride=2, clips_per_video=2)
    save_checkpoint(build("a0", "stream", 2), tmp_path / "m0.pt", class_names=["a", "b"])
    spec = {"preprocessing": prep.to_dict(), "class_names": ["a", "b"], "offsets": [0], "stride": 1}
    (tmp_path / "inference.json").write_text(json.dumps(spec))
    context = SimpleNamespace(
        artifacts={"inference": str(tmp_path / "inference.json"), "member0": str(tmp_path / "m0.pt")}
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = VideoModel()
    monkeypatch.setenv(DEVICE_ENV, "auto")
    model.load_context(context)
    assert model.predictor.device == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        model.load_context(context)


def test_concurrent_promotions_leave_the_better_version_champion(registry, monkeypatch):
    """Two promoters read the same champion; the worse one is slower to decide, so without the lock it
    would write last and win. With it, the second waits and compares against the first's result."""
    import threading
    import time

    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    client.set_model_version_tag("m", "1", "test_acc", "0.60")  # v1 0.60 champion, v2 0.70, v3 0.90
    promotion.promote(TrackingClient(uri), "m", "1")
    decide = promotion._decide

    def slow_decide(candidate, champion, metric, force):
        time.sleep(0.6 if str(candidate.version) == "2" else 0.05)
        return decide(candidate, champion, metric, force)

    monkeypatch.setattr(promotion, "_decide", slow_decide)
    results = {}

    def run(version):
        results[version] = promotion.promote(TrackingClient(uri), "m", version)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("2", "3")]
    threads[0].start()
    time.sleep(0.1)  # v2's promoter takes the lock first, v3's waits for it
    threads[1].start()
    for thread in threads:
        thread.join()
    assert champion(client) == "3"
    assert results["2"].promoted and results["3"].promoted and results["3"].champion_before == "2"
    assert [m.name for m in client.search_registered_models()] == ["m"]  # the lock is gone


def test_a_stale_promotion_lock_is_broken_and_a_held_one_waited_for(registry):
    import time

    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    client.create_registered_model("m" + promotion.LOCK_SUFFIX, tags={"created": "0"})  # left by a dead promoter
    assert promotion.promote(TrackingClient(uri), "m", "3").promoted
    client.create_registered_model("m" + promotion.LOCK_SUFFIX, tags={"created": str(time.time())})
    held = pytest.raises(ValueError, match="another promotion of m holds 'm.promotion-lock'")
    with held, promotion.promotion_lock(TrackingClient(uri), "m", wait_s=0.3):
        pass
    assert champion(client) == "3"
