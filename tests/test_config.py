"""conf/ is the source of truth; params.yaml (what DVC tracks) must be exactly its composition, and the
composition is typed: an unknown key, a wrong type or a value out of range fails with the key's name."""

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from movinet.config import compose, render, to_config
from movinet.config.schema import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_matches_conf():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == compose(root=ROOT), "params.yaml drifted from conf/: run `movinet params`"
    assert (ROOT / "params.yaml").read_text() == render(compose(root=ROOT))  # and is its rendering


def test_no_run_time_interpolations_in_tracked_values():
    text = (ROOT / "params.yaml").read_text()
    assert "${" not in text and "hydra" not in yaml.safe_load(text)


def test_cli_check_and_overrides(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "params", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert compose(["data=csv", "data.extract.size=128"], root=ROOT)["data"]["extract"]["size"] == 128


def test_check_names_the_keys_that_drifted(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    params = compose(root=ROOT)
    params["data"]["clips"]["num_frames"] = 12
    params["train"]["steps"] = 7
    (tmp_path / "params.yaml").write_text(render(params))
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "params", "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "params.yaml differs from conf/ at data.clips.num_frames, train.steps (run `movinet params`)" in done.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.clips.num_frmes=3", "data.clips.num_frmes"),  # a typo
        ("data.loader.batch_size=many", "data.loader.batch_size"),  # a wrong type
        ("data.labels.interpolation=linear", "expected one of [none, hold, nearest]"),
        ("data.clips.discard_threshold=1.5", "data.clips.discard_threshold: must be in [0, 1], got 1.5"),
        ("trainer.acumulate_grad_batches=4", "trainer.acumulate_grad_batches"),
        ("ensemble.offsets=[0,0]", "ensemble.offsets: must be distinct"),
        ("data.loader.num_workers=some", "data.loader: batch_size >= 1, num_workers >= 0 or auto"),
        ("data.loader.num_workers=-1", "data.loader: batch_size >= 1, num_workers >= 0 or auto"),
    ],
)
def test_a_bad_override_fails_at_compose_time_with_the_key(override, message):
    with pytest.raises(ValueError) as caught:
        compose([override], root=ROOT)
    assert message in str(caught.value)


def test_a_typo_in_a_config_file_is_caught_too(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    demo = tmp_path / "conf" / "data" / "demo.yaml"
    demo.write_text(demo.read_text().replace("  num_frames: 8", "  num_frams: 8"))
    with pytest.raises(ValueError, match="num_frams"):
        compose(root=tmp_path)


def test_training_refuses_a_typo_before_any_work(tmp_path):
    done = subprocess.run(
        [sys.executable, "pipelines/train.py", "data.clips.num_frmes=3", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "data.clips.num_frmes" in done.stderr
    assert not (ROOT / "models" / "video" / "run.json").exists() or "num_frmes" not in done.stdout


def test_cli_reports_a_bad_group_plainly():
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "params", "--check", "data=nosuch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "nosuch" in done.stderr and "Traceback" not in done.stderr


def test_every_stage_param_exists():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} declares {key}, which params.yaml lacks"
                node = node[part]


def test_the_library_receives_typed_objects():
    cfg = to_config(compose(["optim=rmsprop", "model=frame_baseline"], root=ROOT))
    assert cfg.optim.momentum == 0.9 and cfg.frames_per_clip == 1  # RMSprop's own fields, model.frames wins
    assert cfg.data.labels.interpolation == "nearest" and cfg.train.monitor_mode == "max"
    assert "resolution" not in compose(root=ROOT)["model"]  # read by nothing, so gone


def test_presets_and_sweeps_are_groups_without_a_plus():
    tiny = compose(["debug=tiny"], root=ROOT)
    assert (tiny["train"]["steps"], tiny["data"]["clips"]["num_frames"], tiny["data"]["transform"]["crop_size"]) == (
        4,
        4,
        32,
    )
    assert compose(["sweep=grid"], root=ROOT) == compose(root=ROOT)  # only Hydra's sweeper settings change
    assert compose(["sweep=optuna"], root=ROOT) == compose(root=ROOT)


# Trainer arguments the run sets itself (from train.*), or that are objects rather than config values.
RUN_OWNED = {
    "max_steps",
    "min_steps",
    "max_epochs",
    "min_epochs",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "logger",
    "callbacks",
    "default_root_dir",
    "enable_checkpointing",
    "plugins",
    "limit_test_batches",
    "limit_predict_batches",
    "model_registry",
    "enable_autolog_hparams",
}


def test_trainer_config_passes_every_lightning_argument_through():
    import lightning as L

    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    fields = set(TrainerConfig.__dataclass_fields__) - {"threads"}
    assert fields <= arguments, f"not Trainer arguments: {sorted(fields - arguments)}"
    assert arguments - RUN_OWNED <= fields, (
        f"Trainer arguments a config cannot set: {sorted(arguments - RUN_OWNED - fields)}"
    )
    cfg = to_config(compose(["trainer.accumulate_grad_batches=4", "trainer.deterministic=true"], root=ROOT))
    trainer = L.Trainer(**cfg.trainer.trainer_kwargs(), logger=False, enable_checkpointing=False)
    assert trainer.accumulate_grad_batches == 4


def test_stage_scripts_have_help():
    scripts = sorted((ROOT / "pipelines").glob("*.py"))
    running = [  # all at once: each is mostly an interpreter starting
        subprocess.Popen(
            [sys.executable, str(script), "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in scripts
    ]
    for script, proc in zip(scripts, running):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{script.name} --help: {err[-2000:]}"
        assert "usage:" in out or "Powered by Hydra" in out, script.name


def test_a_users_own_data_file_keeps_the_drift_check(tmp_path):
    """The README's way to keep one's settings: conf/data/mine.yaml made the default, then `movinet params`."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    mine = (tmp_path / "conf" / "data" / "csv.yaml").read_text().replace("name: csv", "name: mine")
    (tmp_path / "conf" / "data" / "mine.yaml").write_text(mine.replace("videos: data/videos", "videos: /srv/clips"))
    config = tmp_path / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("  - data: demo", "  - data: mine"))
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "params"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert (params["data"]["name"], params["data"]["videos"], params["register"]["name"]) == (
        "mine",
        "/srv/clips",
        "movinet-mine",
    )
    assert params == compose(root=tmp_path)  # what tests/test_config.py checks in a user's project
    check = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "params", "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "matches conf/" in check.stdout
