"""The MLflow store: found from the project root (also inside DVC experiment copies), created once,
and safe for several writers at a time."""

import subprocess
import sys
from pathlib import Path

from movinet.tracking.runs import flatten
from movinet.tracking.store import store_root, tracking_uri

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from movinet.tracking.client import TrackingClient
from movinet.tracking.store import ensure_experiment
uri = sys.argv[1]
experiment = ensure_experiment("parallel", uri)
client = TrackingClient(uri)
run = client.create_run(experiment, run_name=sys.argv[2])
for step in range(15):
    client.log_metrics(run.info.run_id, {"loss": 1.0 / (step + 1), "acc": step / 15}, step=step)
client.set_terminated(run.info.run_id)
"""


def test_parallel_writers_on_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, f"job{i}"], stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2"]
    for run in runs:  # every value exactly once: a retried batch never logs twice
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(15))
        assert sorted(m.value for m in client.get_metric_history(run.info.run_id, "acc")) == [s / 15 for s in range(15)]


def test_store_is_at_the_project_root_even_in_dvc_experiment_copies(tmp_path, monkeypatch):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    (copy / "conf").mkdir(parents=True)
    (copy / "conf" / "config.yaml").write_text("seed: 0\n")
    assert store_root(copy) == tmp_path / "repo"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None, copy) == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(None, copy) == "http://127.0.0.1:5000"
    assert tracking_uri("sqlite:////x/y.db", copy) == "sqlite:////x/y.db"


def test_flatten_config():
    assert flatten({"a": {"b": 1, "c": [0.7, 0.3]}, "d": None}) == {"a.b": "1", "a.c": "[0.7, 0.3]", "d": "None"}
