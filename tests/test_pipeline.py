"""The experimentation loop through its real parts: dvc repro, Hydra multirun, MLflow (SQLite store),
resume from last.ckpt, continuing from a registered MLflow model. Tiny sizes throughout."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=tiny"]  # conf/debug/tiny.yaml: tiny videos, clips and step counts
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
ENV["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
TRACING = ROOT / "tests" / "tracing"  # sitecustomize that records what each stage script reads and writes

ENSEMBLE_STAGES = {"train_member@0", "train_member@1", "evaluate_ensemble"}

pytestmark = pytest.mark.slow


def sh(*cmd, cwd, timeout=600, check=True):
    done = subprocess.run(list(cmd), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(?:[\w/.]+:)?([\w@-]+)'", output))  # pipelines/demo/dvc.yaml:demo_data too


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in ("conf", "pipelines", "src"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "t@example.com", cwd=root)
    sh("git", "config", "user.name", "test", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.analytics", "false", cwd=root)
    sh(sys.executable, "-m", "movinet.cli", "params", *TINY, cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "tiny project", cwd=root)
    return root


def mlflow_client(root: Path, store: Path | None = None):
    """The project's MLflow store (``store``: another copy of its database)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{store or root / 'mlflow.db'}")


def runs_named(client, name: str):
    experiment = client.get_experiment_by_name("movinet")
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")


@dataclass
class FirstRepro:
    """What the project's first ``dvc repro`` printed, traced and left, kept as it was then."""

    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess  # the ``dvc repro`` right after: nothing to do
    traces: Path  # per stage: what it imported, opened, listed and wrote (``tests/tracing``)
    store: Path  # a copy of mlflow.db
    metrics: dict[str, dict]  # metrics/<model>.json
    confusion: dict[str, str]  # plots/<model>/confusion.csv
    metrics_show: dict  # dvc metrics show --json
    plots_show: dict  # dvc plots show --json


@pytest.fixture(scope="module")
def first_repro(project, tmp_path_factory) -> FirstRepro:
    """The first ``dvc repro`` of the tiny project, every stage traced. Forced, so that every stage runs
    (and is traced) whatever a test ran before it (some run ``dvc repro ingest_labels``); the tests
    that run the whole pipeline ask for this fixture, so none runs before it. What it left is copied
    and read at once: later tests change the project (a changed parameter trains again, promotion
    moves the champion alias, register adds versions)."""
    traces, kept = tmp_path_factory.mktemp("traces"), tmp_path_factory.mktemp("first_repro")
    env = {**ENV, "PYTHONPATH": str(TRACING), "MOVINET_TRACE_DIR": str(traces)}
    done = subprocess.run(
        ["dvc", "repro", "--force"], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise AssertionError(f"dvc repro failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    second = sh("dvc", "repro", cwd=project)
    shutil.copy(project / "mlflow.db", kept / "mlflow.db")
    return FirstRepro(
        done,
        second,
        traces,
        kept / "mlflow.db",
        {m: json.loads((project / "metrics" / f"{m}.json").read_text()) for m in ("video", "baseline", "ensemble")},
        {m: (project / "plots" / m / "confusion.csv").read_text() for m in ("video", "baseline")},
        json.loads(sh("dvc", "metrics", "show", "--json", cwd=project).stdout),
        json.loads(sh("dvc", "plots", "show", "--json", cwd=project).stdout),
    )


def test_dvc_repro_end_to_end_then_nothing_to_do(project, first_repro):
    first = first_repro.first
    assert ran_stages(first.stdout) == {
        "demo_data",
        "extract_frames",
        "ingest_labels",
        "train",
        "evaluate",
        "train_baseline",
        "evaluate_baseline",
        *ENSEMBLE_STAGES,
        "register@video",
        "register@ensemble",
    }
    for name in ("video", "baseline"):
        metrics = first_repro.metrics[name]
        assert {"test_acc", "test_top5", "test_macro_f1"} <= set(metrics)
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert first_repro.confusion[name].startswith("actual,predicted\n")
    files = next(iter(first_repro.metrics_show.values()))["data"]
    assert {"metrics/video.json", "metrics/baseline.json"} <= set(files)

    client = mlflow_client(project, first_repro.store)
    (run,) = runs_named(client, "video")
    assert run.info.status == "FINISHED"
    assert run.data.params["data.clips.num_frames"] == "4" and "dataset.fingerprint" in run.data.tags
    assert "test_acc" in run.data.metrics and "best_val_acc" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) >= 2  # a curve, per step
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    expected = {"evaluation/test_confusion_matrix.png", "evaluation/test_per_class.csv", "evaluation/index.html"}
    assert expected <= artifacts  # index.html: the evaluation report
    (baseline,) = runs_named(client, "baseline")
    assert baseline.data.params["model.frames"] == "1"

    # The ensemble: members at half the rate on alternating frames, child runs of one parent.
    metrics, ensemble = first_repro.metrics["video"], first_repro.metrics["ensemble"]
    assert set(ensemble["members"]) == {"m0", "m1"}
    best = max(m["test_acc"] for m in ensemble["members"].values())
    assert ensemble["gain_over_best_member"] == pytest.approx(ensemble["test_acc"] - best)
    assert ensemble["test_clips"] == metrics["test_clips"]  # the base model's test clips
    (parent,) = runs_named(client, "ensemble")
    members = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(m.info.run_name for m in members) == ["ensemble_m0", "ensemble_m1"]
    assert {m.data.params["data.clips.frame_stride"] for m in members} == {"2"}
    assert sorted(m.data.params["data.clips.offset"] for m in members) == ["0", "1"]
    assert {m.data.params["data.clips.num_frames"] for m in members} == {"2"}
    assert parent.info.status == "FINISHED" and parent.data.metrics["test_acc"] == pytest.approx(ensemble["test_acc"])
    assert "gain_over_best_member" in parent.data.metrics and "m1_test_acc" in parent.data.metrics

    # Both evaluated models became versions of movinet-demo, tagged with their test metrics.
    versions = {v.tags["source"]: v for v in client.search_model_versions("name='movinet-demo'")}
    assert set(versions) == {"video", "ensemble"}
    assert float(versions["video"].tags["test_acc"]) == pytest.approx(metrics["test_acc"], abs=1e-5)
    assert versions["ensemble"].tags["members"] == "2"
    champion = client.get_model_version_by_alias("movinet-demo", "champion")
    assert float(champion.tags["test_acc"]) == max(float(v.tags["test_acc"]) for v in versions.values())

    plots = first_repro.plots_show["data"]
    compared = plots["recall per class (video model, ensemble, single-frame baseline)"][0]["content"]["data"]["values"]
    assert {row["filename"] for row in compared} == {f"{m}/per_class.csv" for m in ("video", "ensemble", "baseline")}

    second = first_repro.second
    assert ran_stages(second.stdout) == set()
    assert "Data and pipelines are up to date" in second.stdout


def test_changing_frame_stride_reruns_only_what_uses_it(project, first_repro):
    sh("dvc", "repro", cwd=project)  # up to date whatever ran before (DVC's run cache restores outputs)
    sh(sys.executable, "-m", "movinet.cli", "params", *TINY, "data.clips.frame_stride=2", cwd=project)
    try:
        # ingest counts each split's clips: it runs for real, and its labels come out the same, so the
        # baseline (one frame a clip) stays as it is. What trains is DVC's own decision, read from a
        # dry run (first_repro runs every stage for real): each stage whose declared params or deps
        # changed, and everything downstream of it (--force-downstream: as if its outputs changed).
        assert ran_stages(sh("dvc", "repro", "ingest_labels", cwd=project).stdout) == {"ingest_labels"}
        done = sh("dvc", "repro", "--dry", "--force-downstream", cwd=project)
        expected = {"train", "evaluate", *ENSEMBLE_STAGES, "register@video", "register@ensemble"}
        assert ran_stages(done.stdout) == expected
    finally:
        sh(sys.executable, "-m", "movinet.cli", "params", *TINY, cwd=project)
        sh("dvc", "repro", cwd=project)  # the outputs of the original parameters back (run cache)


# What a stage may touch without declaring it: the MLflow store, Hydra's run logs, git and DVC's own files.
UNTRACKED = ("mlflow.db", "mlartifacts/", "outputs/", ".git/", ".dvc/", "dvc.lock")
CODE = ("src/", "pipelines/", "conf/")


def _declared(project: Path) -> dict[str, dict]:
    """Each stage's command, declared deps and outs (project-relative), as DVC resolves dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            stage.addressing: {
                "cmd": stage.cmd,
                "params": any(isinstance(d, ParamsDependency) for d in stage.deps),
                "deps": sorted(d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)),
                "outs": sorted(o.def_path for o in stage.outs),
            }
            for stage in repo.index.stages
        }


def _final_name(path: str) -> str:
    """``movinet.files`` writes ``.NAME.XXXXXXXX.tmp`` beside ``NAME`` (files and folders)."""
    return "/".join(re.sub(r"^\.(.+)\.[\w-]{8}\.tmp$", r"\1", part) for part in path.split("/"))


def _traced(trace: dict, project: Path) -> tuple[set, set, set, set, bool]:
    """(modules imported, files opened, folders listed, files written, params.yaml read), project-
    relative; the installed ``src/`` (the tests' editable install) is mapped onto the project's copy.
    Files under ``src/`` that are opened rather than imported are the package copied into a logged
    MLflow model (its code), not inputs; folders listed under ``src/`` are the import system's."""
    src = Path(__import__("movinet").__file__).resolve().parents[1]

    def rel(path: str) -> str | None:
        for base, prefix in ((project, ""), (src, "src/")):
            if path.startswith(f"{base}/"):
                return prefix + path[len(str(base)) + 1 :]
        return None

    def keep(paths) -> set[str]:
        return {p for p in paths if p and not p.startswith(UNTRACKED) and not p.startswith("src/")}

    modules = {r for m in trace["modules"] if (r := rel(m)) and r.startswith("src/")}
    opened = keep(r for p in trace["opened"] if (r := rel(p)) and (project / r).is_file())
    listed = keep(r for p in trace["listed"] if (r := rel(p)) and (project / r).is_dir()) - {"pipelines"}
    written = keep(_final_name(r) for p in trace["written"] if (r := rel(p)))
    return modules, opened - {"params.yaml"}, listed, written, "params.yaml" in opened


def _expand_code(deps: list[str], project: Path) -> set[str]:
    out = set()
    for dep in deps:
        path = project / dep
        out |= {str(p.relative_to(project)) for p in path.rglob("*.py")} if path.is_dir() else {dep}
    return out


def _inside(path: str, folders) -> bool:
    return any(path == f or path.startswith(f"{f.rstrip('/')}/") for f in folders)


def test_each_stage_declares_exactly_what_it_reads_and_writes(project, first_repro):
    """Every project module a stage imports and every file it opens is a declared dep, and every
    declared dep is read: code deps exactly (a folder dep means every module in it is imported), data
    deps by containment. What it writes lies inside its declared outs. Hydra's composition reads
    conf/ for every job; of that only a group the command line switches (model=frame_baseline) is
    an input, since params.yaml holds everything else."""
    traces = first_repro.traces
    problems = []
    for name, stage in _declared(project).items():
        args = stage["cmd"].split()[1:]
        trace = json.loads((traces / f"{' '.join([Path(args[0]).name, *args[1:]])}.json").read_text())
        modules, opened, listed, written, read_params = _traced(trace, project)
        switched = {f"conf/{a.replace('=', '/')}.yaml" for a in args[1:] if "=" in a and "." not in a.split("=")[0]}
        code = modules | {p for p in opened if p.startswith("pipelines/") or p in switched}
        declared = _expand_code([d for d in stage["deps"] if d.startswith(CODE)], project)
        if code != declared:
            problems.append(
                f"{name}: code read but not declared {sorted(code - declared)}, "
                f"declared but not read {sorted(declared - code)}"
            )
        data_deps, outs = [d for d in stage["deps"] if not d.startswith(CODE)], stage["outs"]
        data = {p for p in opened if not p.startswith(CODE)}
        data |= {d for d in listed if not any(f.startswith(f"{d}/") for f in data_deps + outs)}  # not a parent
        unread = [d for d in data_deps if not any(_inside(p, [d]) for p in data)]
        undeclared = sorted(p for p in data if not _inside(p, data_deps + outs))
        if unread or undeclared:
            problems.append(f"{name}: data declared but not read {unread}, read but not declared {undeclared}")
        if read_params != stage["params"]:
            problems.append(f"{name}: reads params.yaml: {read_params}, declares params: {stage['params']}")
        stray = sorted(p for p in written if not _inside(p, outs))
        if stray:
            problems.append(f"{name}: writes outside its outs {stray}")
    assert not problems, "\n".join(problems)


def test_touching_a_file_no_stage_reads_reruns_nothing(project, first_repro):
    status = lambda: json.loads(sh("dvc", "status", "--json", cwd=project).stdout or "{}")  # noqa: E731
    sh("dvc", "repro", cwd=project)  # up to date whatever ran before (DVC's run cache restores outputs)
    assert status() == {}
    unread = project / "src" / "movinet" / "inference" / "server.py"
    evaluation = project / "src" / "movinet" / "training" / "evaluate.py"
    originals = {p: p.read_text() for p in (unread, evaluation)}
    try:
        unread.write_text(originals[unread] + "\n# touched\n")
        assert status() == {}
        assert ran_stages(sh("dvc", "repro", cwd=project).stdout) == set()
        evaluation.write_text(originals[evaluation] + "\n# touched\n")
        assert set(status()) == {"evaluate", "evaluate_baseline", "evaluate_ensemble"}
    finally:
        for path, text in originals.items():
            path.write_text(text)
    assert status() == {}


@pytest.fixture(scope="module")
def grid_sweep(project) -> str:
    """A Hydra multirun of two jobs (num_frames 2 and 4) in the project's store: the parent's name."""
    sh("dvc", "repro", "ingest_labels", cwd=project)
    sh(
        sys.executable,
        "pipelines/train.py",
        "-m",
        "data.clips.num_frames=2,4",
        "train.steps=2",
        "train.eval_interval=1",
        "train.name=grid",
        cwd=project,
    )
    return "sweep-grid"


def test_multirun_is_one_parent_with_child_runs(project, grid_sweep):
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("movinet")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`movinet.sweep` = 'parent' and attributes.run_name = 'sweep-grid'",
    )
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.params["data.clips.num_frames"] for c in children) == ["2", "4"]
    assert parent.data.metrics["jobs"] == 2 and parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert "sweep_summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


# A run stopped right after writing last.ckpt, then started again, against one never stopped: 8 steps,
# one batch per epoch (every checkpoint at an epoch boundary: Lightning restarts a non-stateful loader at
# the start of its epoch), a checkpoint every 4 steps, warmup over 3.
STEPS, WARMUP, STOP_AT = 8, 3, 4
RESUME = [
    f"train.steps={STEPS}",
    f"train.eval_interval={STOP_AT}",
    f"optim.warmup_steps={WARMUP}",
    "data.loader.batch_size=16",
]


class Stopped(Exception):
    """Raised right after ``last.ckpt`` is written: the files a kill at that moment leaves behind."""


def _gray_project(root: Path) -> list[str]:
    """Six tiny gray videos of two classes, extracted and ingested; the overrides that point at them."""
    from conftest import gray_frames, write_video
    from movinet.data.extract import extract_videos
    from movinet.data.ingest import ingest_labels

    videos = root / "videos"
    videos.mkdir()
    for i in range(6):
        write_video(videos / f"v{i}.mp4", gray_frames(40, 32, 32, step=3 + i % 3), 10, "libx264")
    (root / "labels.csv").write_text("filename,label\n" + "".join(f"v{i}.mp4,{'ab'[i % 2]}\n" for i in range(6)))
    extract_videos(videos, root / "frames", size=0, progress=False)
    ingest_labels(root / "labels.csv", root / "frames", root / "labels")
    # a few windows per training video: all of them fit one batch
    return [
        f"data.extract.out_dir={root / 'frames'}",
        f"data.labels.out_dir={root / 'labels'}",
        "data.clips.train_hop=16",
    ]


def _resume_callbacks():
    import torch
    from lightning.pytorch.callbacks import Callback

    class SeedEachEpoch(Callback):
        """Each epoch's random draws (batch order, crops, dropout, stochastic depth) from a seed of its
        own. A checkpoint does not hold the RNG state, so a resumed run would otherwise draw other
        masks: what must carry over exactly (weights, optimizer, schedule, step) is what is compared."""

        def on_train_epoch_start(self, trainer, module):
            torch.manual_seed(1000 + trainer.current_epoch)

    class StopAt(Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_epoch_end(self, trainer, module):  # after the validation and checkpoint of the step
            if trainer.global_step == self.step:
                raise Stopped(self.step)

    class AtStart(Callback):
        """What a run starts training from: its step, weights, optimizer state and schedule position."""

        def on_train_start(self, trainer, module):
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            self.seen = {
                "step": trainer.global_step,
                "batches_per_epoch": trainer.num_training_batches,
                "weights": {k: v.clone() for k, v in module.state_dict().items()},
                "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
                "schedule": scheduler.last_epoch,
                "lr": scheduler.get_last_lr()[0],
            }

    return SeedEachEpoch, StopAt, AtStart


def warmup_cosine_lr(step: int, base: float, warmup: int, total: int) -> float:
    """The schedule by hand: linear warmup to ``base`` over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.fixture()
def in_process_training(tmp_path, monkeypatch):
    """run_training in this process, leaving nothing behind: its MLflow store in tmp_path, and the
    global RNGs, torch threads, tracking URI and seed variables it sets restored afterwards."""
    import random

    import numpy as np
    import torch
    from mlflow.tracking import _tracking_service

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(_tracking_service.utils, "_tracking_uri", _tracking_service.utils._tracking_uri)
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    states, threads = (random.getstate(), np.random.get_state()), torch.get_num_threads()
    with torch.random.fork_rng():
        yield tmp_path
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_num_threads(threads)


def _resumes(out: Path, cfg, folder: Path, finished: bool = False) -> str | None:
    """Whether ``run_training(cfg)`` would resume the run left in ``out``, decided on a copy of it in
    ``folder``: the MLflow run id it continues, or None when it starts over (the copy is then cleared)."""
    from movinet.config import config_dict
    from movinet.training.run import _resume_state, _Run

    shutil.copytree(out, folder)
    if finished:
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "finished": True}))
    run = _Run(cfg, config_dict(cfg), folder, folder.parent, "unused")
    _resume_state(run)
    assert (run.resume_from is not None) == folder.exists() == (run.run_id is not None)
    return run.run_id


def _metric_history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def test_a_stopped_run_resumes_exactly_where_it_stopped(in_process_training):
    """Stopped after step 4 of 8 and started again, the run continues from last.ckpt: step, weights, optimizer
    state and schedule position as saved, then the same weights, losses and learning rates as a run never
    stopped; one MLflow run with each step logged once. Another config starts over instead."""
    import torch
    from mlflow.tracking import MlflowClient

    from conftest import tiny_config
    from movinet.config import to_config
    from movinet.training.run import run_training

    root = in_process_training
    data = _gray_project(root)
    cfg = to_config(tiny_config(*data, *RESUME))
    SeedEachEpoch, StopAt, AtStart = _resume_callbacks()
    straight = run_training(cfg, root / "straight", root, callbacks=[SeedEachEpoch()])
    out = root / "resumed"
    with pytest.raises(Stopped):
        run_training(cfg, out, root, callbacks=[SeedEachEpoch(), StopAt(STOP_AT)])
    stopped = json.loads((out / "run.json").read_text())
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert stopped["finished"] is False and saved["global_step"] == STOP_AT

    # The same config continues the stopped run; another config, or a finished run, starts over.
    assert _resumes(out, cfg, root / "same") == stopped["mlflow_run_id"]
    assert _resumes(out, to_config(tiny_config(*data, *RESUME, "train.steps=12")), root / "other") is None
    assert _resumes(out, cfg, root / "finished", finished=True) is None

    probe = AtStart()
    resumed = run_training(cfg, out, root, callbacks=[SeedEachEpoch(), probe])
    start = probe.seen
    assert start["step"] == STOP_AT and start["batches_per_epoch"] == 1
    lr = lambda step: warmup_cosine_lr(step, cfg.optim.lr, WARMUP, STEPS)  # noqa: E731
    assert start["schedule"] == STOP_AT and start["lr"] == pytest.approx(lr(STOP_AT))
    for key, value in saved["state_dict"].items():
        assert torch.equal(start["weights"][key], value), key
    assert start["optimizer"]["param_groups"] == saved["optimizer_states"][0]["param_groups"]
    torch.testing.assert_close(start["optimizer"]["state"], saved["optimizer_states"][0]["state"], rtol=0, atol=0)
    assert {float(s["step"]) for s in start["optimizer"]["state"].values()} == {STOP_AT}  # AdamW's own count

    ends = [torch.load(root / r / "checkpoints" / "last.ckpt", weights_only=False) for r in ("straight", "resumed")]
    assert ends[0]["global_step"] == ends[1]["global_step"] == STEPS
    torch.testing.assert_close(ends[1]["state_dict"], ends[0]["state_dict"], rtol=1e-5, atol=1e-6)
    states = [e["optimizer_states"][0]["state"] for e in ends]
    torch.testing.assert_close(states[1], states[0], rtol=1e-5, atol=1e-7)

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert resumed["run_id"] == stopped["mlflow_run_id"] != straight["run_id"]
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert json.loads((out / "run.json").read_text())["finished"] is True
    steps, lrs = zip(*_metric_history(client, resumed["run_id"], "lr"))
    assert steps == tuple(range(STEPS)) and lrs == pytest.approx([lr(s) for s in steps])
    for name in ("lr", "train_loss", "val_acc", "val_loss"):
        steps, values = zip(*_metric_history(client, resumed["run_id"], name))
        expected_steps, expected = zip(*_metric_history(client, straight["run_id"], name))
        assert steps == expected_steps and len(set(steps)) == len(steps), name  # each step once
        assert values == pytest.approx(expected, rel=1e-5, abs=1e-6), name


def test_continue_from_registered_mlflow_model(project):
    sh("dvc", "repro", "ingest_labels", cwd=project)
    sh(sys.executable, "pipelines/train.py", "train.name=donor", cwd=project)
    client = mlflow_client(project)
    (donor,) = runs_named(client, "donor")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    version = mlflow.register_model(f"runs:/{donor.info.run_id}/model", "tiny")
    client.set_registered_model_alias("tiny", "champion", version.version)

    sh(sys.executable, "pipelines/train.py", "train.name=continued", "train.init=models:/tiny@champion", cwd=project)
    (continued,) = runs_named(client, "continued")
    assert continued.data.tags["movinet.init"] == "continued from models:/tiny@champion"

    refused = sh(
        sys.executable,
        "pipelines/train.py",
        "train.name=wrong",
        "model=a1",
        "train.init=models:/tiny@champion",
        cwd=project,
        check=False,
    )
    assert refused.returncode != 0
    assert "is a MoViNet-A0 base model; this run builds MoViNet-A1 base" in refused.stderr
    cfg = yaml.safe_load((project / "models" / "continued" / "config.yaml").read_text())
    assert cfg["train"]["init"] == "models:/tiny@champion"


def test_optuna_sweep_returns_the_monitored_metric(project):
    sh("dvc", "repro", "ingest_labels", cwd=project)
    done = sh(
        sys.executable,
        "pipelines/train.py",
        "-m",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "data.clips.num_frames=choice(2,4)",
        "data.loader.batch_size=choice(4)",
        "train.steps=2",
        "train.eval_interval=1",
        "train.name=optuna",
        cwd=project,
    )
    assert "Best value" in done.stdout + done.stderr
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("movinet")
    parent = next(
        r
        for r in client.search_runs([experiment.experiment_id], filter_string="tags.`movinet.sweep` = 'parent'")
        if r.info.run_name == "sweep-optuna"
    )
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2 and all("best_val_acc" in c.data.metrics for c in children)
    assert parent.data.metrics["best_val_acc"] == max(c.data.metrics["best_val_acc"] for c in children)


def _assert_the_alias_answers_as_the_trained_model(project, videos, stdout: str, timeline_csv) -> None:
    """What `predict --model models:/movinet-demo@champion` printed and wrote, parsed, equals the
    trained checkpoint (models/video/model.pt) run in this process: top 3 per video, every timeline row."""
    import csv

    from movinet.inference.load import load_predictor

    trained = load_predictor(str(project / "models" / "video" / "model.pt"))
    expected = [trained.predict(v, per_frame=True) for v in videos]
    lines = [line for line in stdout.splitlines() if line.startswith(str(videos[0].parent))]
    assert [line.split(": ", 1)[0] for line in lines] == [str(v) for v in videos]
    for line, want in zip(lines, expected):
        parsed = [part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", ")]
        assert [name for name, _ in parsed] == [name for name, _ in want.top(3)]
        assert [float(p) for _, p in parsed] == pytest.approx([p for _, p in want.top(3)], abs=6e-4)
    with open(timeline_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    timeline = [(str(v), r) for v, want in zip(videos, expected) for r in want.timeline]
    assert len(rows) == len(timeline) > 3
    for row, (video, want) in zip(rows, timeline):
        assert (row["video"], int(row["frame"])) == (video, want["frame"])
        probabilities = [float(row[c]) for c in trained.class_names]
        assert probabilities == pytest.approx(want["probabilities"].tolist(), abs=6e-5)


def test_register_promote_then_predict_by_alias(project, first_repro, tmp_path):
    sh("dvc", "repro", cwd=project)
    client = mlflow_client(project)
    cli = [sys.executable, "-m", "movinet.cli"]
    champion = str(client.get_model_version_by_alias("movinet-demo", "champion").version)
    other = next(
        str(v.version) for v in client.search_model_versions("name='movinet-demo'") if str(v.version) != champion
    )
    best = float(client.get_model_version("movinet-demo", champion).tags["test_acc"])

    client.set_model_version_tag("movinet-demo", other, "test_acc", str(best - 0.1))
    worse = sh(*cli, "promote", "movinet-demo", "--version", other, cwd=project, check=False)
    assert worse.returncode == 1 and "rejected" in worse.stdout
    assert str(client.get_model_version_by_alias("movinet-demo", "champion").version) == champion
    client.set_model_version_tag("movinet-demo", other, "test_acc", str(best + 0.1))
    better = sh(*cli, "promote", "movinet-demo", "--version", other, cwd=project)
    assert (
        "promoted" in better.stdout
        and str(client.get_model_version_by_alias("movinet-demo", "champion").version) == other
    )
    forced = sh(*cli, "promote", "movinet-demo", "--version", champion, "--force", cwd=project)
    assert "forced" in forced.stdout
    assert str(client.get_model_version_by_alias("movinet-demo", "champion").version) == champion
    listing = sh(*cli, "models", "movinet-demo", cwd=project).stdout
    assert f"v{champion} @champion" in listing
    video_version = json.loads((project / "models" / "registry" / "video.json").read_text())["version"]
    sh(*cli, "promote", "movinet-demo", "--version", video_version, "--force", cwd=project, check=False)
    assert str(client.get_model_version_by_alias("movinet-demo", "champion").version) == video_version

    videos = sorted((project / "data" / "demo" / "videos").glob("*.mp4"))[:2]
    (tmp_path / "bad.mp4").write_bytes(b"broken")
    done = sh(
        *cli,
        "predict",
        str(videos[0]),
        str(videos[1]),
        str(tmp_path / "bad.mp4"),
        "--model",
        "models:/movinet-demo@champion",
        "--top-k",
        "3",
        "--per-frame",
        str(tmp_path / "frames.csv"),
        "--plot",
        str(tmp_path / "timeline.png"),
        cwd=project,
        check=False,
    )
    assert done.returncode == 1 and "bad.mp4: cannot decode" in done.stderr  # reported, the others done
    _assert_the_alias_answers_as_the_trained_model(project, videos, done.stdout, tmp_path / "frames.csv")
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    folder = sh(
        *cli, "predict", str(videos[0].parent), "--model", "models:/movinet-demo@champion", "--json", cwd=project
    )
    assert len(folder.stdout.splitlines()) == 16  # batch mode: every video of the folder
    streamed = sh(
        *cli, "stream", str(videos[0]), "--no-realtime", "--model", "models:/movinet-demo@champion", cwd=project
    )
    assert streamed.stdout.splitlines()[-1].startswith("final  frame")


def test_mlflow_models_serve_answers_a_base64_video(project, first_repro):
    import base64
    import socket

    import requests

    sh("dvc", "repro", cwd=project)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/movinet-demo@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "mlflow models serve did not start"
            time.sleep(0.5)
        video = sorted((project / "data" / "demo" / "videos").glob("*.mp4"))[0]
        payload = {
            "dataframe_records": [{"video": base64.b64encode(video.read_bytes()).decode()}],
            "params": {"per_frame": True, "top_k": 2},
        }
        reply = requests.post(f"{url}/invocations", json=payload, timeout=120)
        assert reply.status_code == 200, reply.text
        (row,) = reply.json()["predictions"]
        classes = json.loads((project / "data" / "labels" / "classes.json").read_text())["classes"]
        assert row["label"] in classes and len(json.loads(row["top_k"])) == 2
        assert sum(row[c] for c in classes) == pytest.approx(1.0, abs=1e-4)
        assert json.loads(row["per_frame"])
        bad = requests.post(
            f"{url}/invocations", json={"dataframe_records": [{"video": "bm90IGEgdmlkZW8="}]}, timeout=60
        )
        assert bad.status_code == 400 and "row 0" in bad.text
        path = requests.post(f"{url}/invocations", json={"dataframe_records": [{"video": str(video)}]}, timeout=60)
        assert path.status_code == 400 and "must be the base64" in path.text  # no server files by path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None and os.environ.get("CI"):
        raise AssertionError("CI must install Chromium (.ci/run does: apt-get install chromium)")
    return found


def headless(browser: str, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--window-size=1600,1000",
            "--virtual-time-budget=30000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_evaluation_reports_open_offline_in_chromium(project, first_repro, tmp_path):
    """Each evaluated model's report shows every test video that has evaluation clips, needs nothing
    from the network (no script, no remote URL) and renders in a real browser without errors."""
    from movinet.config import load_config
    from movinet.data.clips import ClipParams
    from movinet.data.dataset import build_clips

    sh("dvc", "repro", cwd=project)  # up to date whatever ran before (DVC's run cache restores outputs)
    cfg = load_config(project)
    data = project / "data"
    clips, _ = build_clips(data / "frames", data / "labels", "test", ClipParams.from_config(cfg))
    videos = {c.video for c in clips}
    browser = chromium()
    for name in ("video", "ensemble", "baseline"):
        page = project / "reports" / name / "index.html"
        text = page.read_text()
        assert "<script" not in text and not re.search(r"(src|href)=\"(https?:)?//", text)
        if name != "baseline":  # the baseline's clips are one frame: its test videos are others
            assert set(re.findall(r'<section class="video \w+" id="v-[^"]+"><h3>([^<]+)</h3>', text)) == videos
        if browser is None:
            continue
        shown = headless(browser, page.as_uri(), "--dump-dom", "--enable-logging=stderr", "--v=0")
        assert shown.returncode == 0 and all(v in shown.stdout for v in videos)
        assert "CONSOLE" not in shown.stderr and "Uncaught" not in shown.stderr
    if browser is not None:
        shot = tmp_path / "report.png"
        headless(browser, (project / "reports" / "video" / "index.html").as_uri(), f"--screenshot={shot}")
        assert shot.stat().st_size > 20_000  # thumbnails and timelines drawn, not a blank page


def test_mlflow_ui_shows_the_sweep_runs_and_metrics(project, grid_sweep, tmp_path):
    import socket

    import requests

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium here (CI installs it)")
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("movinet")
    (parent,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{grid_sweep}'")
    child = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{project / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=project,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        base = f"{url}/#/experiments/{experiment.experiment_id}"
        runs_page = headless(browser, f"{base}/runs", "--dump-dom").stdout
        assert grid_sweep in runs_page and "matching runs" in runs_page
        for run in (parent, child):
            page = headless(browser, f"{base}/runs/{run.info.run_id}", "--dump-dom").stdout
            assert run.info.run_name in page and "best_val_acc" in page
        shot = tmp_path / "runs.png"
        headless(browser, f"{base}/runs", f"--screenshot={shot}")
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        server.terminate()
        server.wait(timeout=30)
