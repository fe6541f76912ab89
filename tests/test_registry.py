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


def tmp_path_of(client):
    """The folder of the registry fixture's SQLite file."""
    from pathlib import Path

    return Path(client.tracking_uri.removeprefix("sqlite:///")).parent


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
    """Two promoters read the same champion; the worse one decides only once the better one is
    waiting for the lock, so without the lock it would write last and win. With it, the second
    waits and compares against the first's result. Events order the threads: no sleeps."""
    import threading

    from mlflow.exceptions import MlflowException

    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    client.set_model_version_tag("m", "1", "test_acc", "0.60")  # v1 0.60 champion, v2 0.70, v3 0.90
    promotion.promote(TrackingClient(uri), "m", "1")
    decide, deciding, v3_waits = promotion._decide, threading.Event(), threading.Event()

    def decide_when_v3_waits(candidate, champion, metric, force):
        if str(candidate.version) == "2":
            deciding.set()
            assert v3_waits.wait(60)
        return decide(candidate, champion, metric, force)

    def v3_client():
        tracking = TrackingClient(uri)
        create = tracking.mlflow.create_registered_model

        def create_lock(*args, **kwargs):
            try:
                return create(*args, **kwargs)
            except MlflowException:
                v3_waits.set()  # the lock is held: v3 waits for it
                raise

        monkeypatch.setattr(tracking.mlflow, "create_registered_model", create_lock)
        return tracking

    monkeypatch.setattr(promotion, "_decide", decide_when_v3_waits)
    results = {}
    v2 = threading.Thread(target=lambda: results.update({"2": promotion.promote(TrackingClient(uri), "m", "2")}))
    v2.start()
    assert deciding.wait(60)  # v2 holds the lock and has read v1 as the champion
    results["3"] = promotion.promote(v3_client(), "m", "3")
    v2.join()
    assert champion(client) == "3"
    assert results["2"].promoted and results["3"].promoted and results["3"].champion_before == "2"
    assert [m.name for m in client.search_registered_models()] == ["m"]  # the lock is gone


def test_a_stale_promotion_lock_is_broken(registry):
    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    client.create_registered_model("m" + promotion.LOCK_SUFFIX, tags={"created": "0"})  # left by a dead promoter
    assert promotion.promote(TrackingClient(uri), "m", "3").promoted
    assert champion(client) == "3" and [m.name for m in client.search_registered_models()] == ["m"]


def test_promotions_in_process_record_each_decision(registry):
    """The CLI test's sequence through ``promote`` itself, with the exact results and notes."""
    from movinet.tracking.client import TrackingClient
    from movinet.tracking.promotion import Promotion, describe, promote

    uri, client = registry
    tracking = TrackingClient(uri)
    assert promote(tracking, "m", "1") == Promotion(True, "1", None, "m v1 promoted: first champion (test_acc 0.8000)")
    assert promote(tracking, "m", 2) == Promotion(
        False, "2", "1", "m v2 rejected: test_acc 0.7000 is not better than 0.8000 of v1"
    )
    assert promote(tracking, "m", "1") == Promotion(False, "1", "1", "v1 is already the champion")
    assert promote(tracking, "m") == Promotion(True, "3", "1", "m v3 promoted: test_acc 0.9000 > 0.8000 of v1")
    assert promote(tracking, "m", "2", force=True) == Promotion(
        True, "2", "3", "m v2 promoted: forced over v3 (test_acc 0.9000)"
    )
    assert champion(client) == "2"
    client.create_registered_model("other")  # another model's versions are not "m"'s
    client.create_model_version(
        "other", (tmp_path_of(client) / "x").as_uri(), client.get_model_version("m", "1").run_id
    )
    client.set_registered_model_alias("m", "staging", "2")
    client.create_model_version("m", (tmp_path_of(client) / "y").as_uri())  # v4: no run, no metrics, no decision
    rows = describe(tracking, "m")
    assert [(r["version"], r["aliases"], r.get("test_acc"), r["promotion"]) for r in rows] == [
        ("1", "", "0.80", "promoted: first champion (test_acc 0.8000)"),
        ("2", "champion,staging", "0.70", "promoted: forced over v3 (test_acc 0.9000)"),
        ("3", "", "0.90", "promoted: test_acc 0.9000 > 0.8000 of v1"),
        ("4", "", None, ""),
    ]
    assert all(r["run_id"] for r in rows[:3]) and rows[3]["run_id"] == ""
    assert set(rows[0]) == {"version", "aliases", "test_acc", "promotion", "run_id"}
    assert sorted(m.name for m in client.search_registered_models()) == ["m", "other"]  # every lock released


def test_the_latest_version_is_the_highest_number_and_a_tie_is_not_better(registry, tmp_path):
    from movinet.tracking.client import TrackingClient
    from movinet.tracking.promotion import promote

    uri, client = registry
    run = client.create_run(client.get_experiment_by_name("reg").experiment_id)
    for n in range(4, 11):  # v4..v10: "10" sorts before "9" as text
        client.create_model_version("m", (tmp_path / "art" / run.info.run_id).as_uri(), run.info.run_id)
        client.set_model_version_tag("m", str(n), "test_acc", "0.90" if n == 10 else "0.10")
    tracking = TrackingClient(uri)
    promote(tracking, "m", "3")
    tie = promote(tracking, "m")  # v10 has v3's 0.90: not strictly better
    assert (tie.version, tie.promoted) == ("10", False)
    assert tie.message == "m v10 rejected: test_acc 0.9000 is not better than 0.9000 of v3"
    with pytest.raises(ValueError, match=r"^m has no version 11 \(versions: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\)$"):
        promote(tracking, "m", "11")
    with pytest.raises(ValueError, match=r"^no registered model named 'other'$"):
        promote(tracking, "other")
    assert (
        promote(tracking, "m", "10", metric="val_acc", force=True).message
        == "m v10 promoted: forced over v3 (val_acc none)"
    )


class _Version:
    def __init__(self, version: str, **tags: str) -> None:
        self.version, self.tags = version, tags


@pytest.mark.parametrize(
    "candidate,champion,force,expected",
    [
        (_Version("2", test_acc="0.5"), None, False, (True, "first champion (test_acc 0.5000)")),
        (_Version("2", test_acc="0.5"), _Version("1"), False, (True, "v1 has no test_acc")),
        (_Version("2", test_acc="0.5"), _Version("1", test_acc="n/a"), False, (True, "v1 has no test_acc")),
        (
            _Version("2", test_acc="0.5"),
            _Version("1", test_acc="0.49999"),
            False,
            (True, "test_acc 0.5000 > 0.5000 of v1"),
        ),
        (
            _Version("2", test_acc="0.5"),
            _Version("1", test_acc="0.5"),
            False,
            (False, "test_acc 0.5000 is not better than 0.5000 of v1"),
        ),
        (_Version("2"), None, True, (True, "forced")),
        (_Version("2"), _Version("1", test_acc="0.25"), True, (True, "forced over v1 (test_acc 0.2500)")),
        (
            _Version("2", test_acc="0.1"),
            _Version("1", test_acc="0.9"),
            True,
            (True, "forced over v1 (test_acc 0.9000)"),
        ),
    ],
)
def test_the_promotion_rule(candidate, champion, force, expected):
    from movinet.tracking.promotion import _decide

    assert _decide(candidate, champion, "test_acc", force) == expected


def test_a_version_without_the_metric_needs_force():
    from movinet.tracking.promotion import _decide

    with pytest.raises(ValueError, match=r"^v2 has no 'test_acc' tag to compare \(use --force to promote anyway\)$"):
        _decide(_Version("2", test_acc="x"), _Version("1", test_acc="0.5"), "test_acc", False)


class _Clock:
    """Stands in for the ``time`` module inside the lock: every reading advances one second, and
    sleeping costs nothing (the waits are counted, not slept)."""

    def __init__(self, now: float, step: float = 1.0) -> None:
        self.now, self.step, self.sleeps = now, step, 0

    def time(self) -> float:
        self.now += self.step
        return self.now

    monotonic = time

    def sleep(self, _seconds: float) -> None:
        self.sleeps += 1


def test_the_lock_waits_its_deadline_then_names_itself(registry, monkeypatch):
    import time

    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    clock = _Clock(time.time())
    client.create_registered_model("m.promotion-lock", tags={"created": str(clock.now + 10_000)})  # fresh
    monkeypatch.setattr(promotion, "time", clock)
    held = pytest.raises(ValueError, match=r"another promotion of m holds 'm.promotion-lock'; retry")
    with held, promotion.promotion_lock(TrackingClient(uri), "m", wait_s=5.0):
        pass
    assert 1 <= clock.sleeps <= 5  # it polled until the deadline, not forever and not never
    assert "m.promotion-lock" in [m.name for m in client.search_registered_models()]  # not its lock to delete


@pytest.mark.parametrize("age,broken", [(295.0, False), (300.0, False), (300.5, True)])
def test_a_lock_older_than_the_stale_limit_is_broken(registry, monkeypatch, age, broken):
    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    assert promotion.LOCK_STALE_S == 300.0
    clock = _Clock(1_000_000.0, step=0.0)  # a stopped clock: the age is exact
    client.create_registered_model("m.promotion-lock", tags={"created": str(clock.now - age)})
    monkeypatch.setattr(promotion, "time", clock)
    assert promotion._break_if_stale(TrackingClient(uri), "m.promotion-lock") is broken
    names = [m.name for m in client.search_registered_models()]
    assert ("m.promotion-lock" in names) is not broken


def test_the_lock_is_released_when_the_promotion_fails(registry):
    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    with pytest.raises(RuntimeError, match="boom"), promotion.promotion_lock(TrackingClient(uri), "m"):
        assert "m.promotion-lock" in [m.name for m in client.search_registered_models()]
        raise RuntimeError("boom")
    assert [m.name for m in client.search_registered_models()] == ["m"]


def test_a_lock_without_its_time_is_stale_and_a_released_one_is_retried_at_once(registry):
    from movinet.tracking import promotion
    from movinet.tracking.client import TrackingClient

    uri, client = registry
    client.create_registered_model("m.promotion-lock")  # no "created" tag: as old as can be
    assert promotion._break_if_stale(TrackingClient(uri), "m.promotion-lock") is True
    assert [m.name for m in client.search_registered_models()] == ["m"]
    assert promotion._break_if_stale(TrackingClient(uri), "m.promotion-lock") is True  # gone meanwhile: retry
