"""conf/ is the source of truth; params.yaml (what DVC tracks) must be exactly its composition."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from movinet.config import compose, render

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_matches_conf():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == compose(root=ROOT), "params.yaml drifted from conf/: run `movinet params`"
    assert (ROOT / "params.yaml").read_text() == render(compose(root=ROOT))  # and is its rendering


def test_no_run_time_interpolations_in_tracked_values():
    text = (ROOT / "params.yaml").read_text()
    assert "${" not in text and "hydra" not in yaml.safe_load(text)


def test_cli_check_and_overrides(tmp_path):
    done = subprocess.run([sys.executable, "-m", "movinet.cli", "params", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert compose(["data=csv", "data.extract.size=128"], root=ROOT)["data"]["extract"]["size"] == 128


def test_config_typo_is_a_clear_error():
    with pytest.raises(Exception, match="extarct"):
        compose(["data.extarct.size=1"], root=ROOT)
    done = subprocess.run([sys.executable, "-m", "movinet.cli", "params", "--check", "data=nosuch"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "nosuch" in done.stderr


def test_every_stage_param_exists():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} declares {key}, which params.yaml lacks"
                node = node[part]
