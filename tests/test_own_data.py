"""A new user's own data through the real path: six real clips (``../shared/videos``), a labels CSV
with two videos per class, ``movinet params data=csv ...`` and ``dvc repro``. With too few videos
per class for a split by video, ingest refuses naming each class (``split_by=video``) or cuts the
videos in time (the default), and the whole chain runs to a registered version without ever
touching the demo generator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from test_pipeline import ENV, ROOT, ran_stages, sh

pytestmark = pytest.mark.slow

SHARED = ROOT.parent / "shared" / "videos"
CLASSES = {  # two videos a class: too few for train, val and test by video
    "wrestling": ["demo.mp4", "t_test.avi"],
    "street": ["t_test.mp4", "test_video_structuralize.mp4"],
    "people": ["demo_spatiotemporal_det.mp4", "demo_skeleton.mp4"],
}
PARAMS = ["data=csv", "data.videos=data/videos", "data.labels_csv=data/labels.csv", "debug=tiny"]


@pytest.fixture(scope="module")
def own_project(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"no real clips at {SHARED} (the team's shared folder)")
    root = tmp_path_factory.mktemp("own")
    for name in ("conf", "pipelines", "src"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "data" / "videos").mkdir(parents=True)
    rows = []
    for label, videos in CLASSES.items():
        for video in videos:
            shutil.copy(SHARED / video, root / "data" / "videos" / video)
            rows.append(f"{video},{label}\n")
    (root / "data" / "labels.csv").write_text("filename,label\n" + "".join(rows))
    setup = [
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "test"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
    ]
    for cmd in setup:
        sh(*cmd, cwd=root)
    return root


def test_by_video_stops_in_ingest_naming_each_class(own_project):
    sh(sys.executable, "-m", "movinet.cli", "params", *PARAMS, "data.labels.split_by=video", cwd=own_project)
    labels = own_project / "data" / "labels"
    before = _files(labels)
    done = sh("dvc", "repro", cwd=own_project, check=False)
    assert done.returncode != 0
    assert ran_stages(done.stdout) - {"extract_frames"} == {"ingest_labels"}  # and nothing after it
    for label in CLASSES:
        assert f"class '{label}': 2 video(s) for 3 splits (train, val, test)" in done.stderr
    assert "data.labels.split_by=time" in done.stderr and "Traceback" not in done.stderr
    # Nothing half-written: DVC removes a stage's outputs before running it, and ingest builds its own in
    # a temporary folder moved into place only when complete. Nothing lost: whatever an earlier run
    # left (when a test before this one ran the chain) comes back from DVC's cache.
    assert _files(labels) is None and not [p.name for p in labels.parent.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert not (own_project / "data" / "demo").exists()
    if before is not None:
        sh("dvc", "checkout", "ingest_labels", cwd=own_project)
        assert _files(labels) == before


def _files(folder):
    """A folder's files by name with their bytes; None when there is no folder."""
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else None


def test_dvc_repro_runs_the_whole_chain_on_real_clips(own_project):
    sh(sys.executable, "-m", "movinet.cli", "params", *PARAMS, cwd=own_project)
    done = sh("dvc", "repro", cwd=own_project, timeout=1200)
    expected = {
        "extract_frames",
        "ingest_labels",
        "train",
        "evaluate",
        "train_baseline",
        "evaluate_baseline",
        "train_member@0",
        "train_member@1",
        "evaluate_ensemble",
        "register@video",
        "register@ensemble",
    }  # no demo_data: the generator is never touched (extraction may be done already: it ran before the refusal)
    assert ran_stages(done.stdout) | {"extract_frames"} == expected
    assert not (own_project / "data" / "demo").exists()
    report = json.loads((own_project / "data" / "labels" / "ingest_report.json").read_text())
    assert report["videos_split_in_time"] == sorted(v for videos in CLASSES.values() for v in videos)
    assert report["videos_per_split"] == {"train": 6, "val": 6, "test": 6}
    assert all(report["clips_per_split"][s] > 0 for s in ("train", "val", "test"))
    for name in ("video", "baseline", "ensemble"):
        metrics = json.loads((own_project / "metrics" / f"{name}.json").read_text())
        assert metrics["test_clips"] > 0 and 0.0 <= metrics["test_acc"] <= 1.0
        assert "test_top5" not in metrics  # 3 classes: top-5 would be 1.0 by construction
    registered = json.loads((own_project / "models" / "registry" / "video.json").read_text())
    assert registered["name"] == "movinet-csv" and registered["version"] == "1"
    again = subprocess.run(["dvc", "repro"], cwd=own_project, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and ran_stages(again.stdout) == set()


def test_the_demo_pipeline_refuses_own_data_plainly(own_project):
    sh(sys.executable, "-m", "movinet.cli", "params", *PARAMS[:3], cwd=own_project)  # debug=tiny sizes a demo too
    done = sh("dvc", "repro", "pipelines/demo/dvc.yaml", cwd=own_project, check=False)
    assert done.returncode != 0 and "data=csv has no data.generate section" in done.stderr
