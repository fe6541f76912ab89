"""The shared tracking server for real, on 127.0.0.1: PostgreSQL (runs and registry), moto's S3
(artifacts) and ``mlflow server`` in front, started by ``movinet.tracking.team_server``. Parallel
sweeps (joblib in worker processes, submitit_local in subprocesses), register, promote and predict
all go through it, clients holding only MLFLOW_TRACKING_URI; no SQLite file appears anywhere."""

from __future__ import annotations

import csv
import json
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from services import ENV, processes_with, require_postgresql, s3_keys, service_folder, sh, team_server, tiny_project
from test_pipeline import ran_stages

from movinet.tracking.team_server import free_port, postgres_bin

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "movinet.cli"]
SWEEP = ["data.loader.batch_size=2,4", "train.steps=2", "train.eval_interval=1", "trainer.threads=1"]


@pytest.fixture(scope="module")
def server():
    with team_server() as running:
        yield running


@pytest.fixture(scope="module")
def project(server, tmp_path_factory):
    """The tiny project with its demo data extracted and ingested (what training reads)."""
    root = tiny_project(tmp_path_factory.mktemp("team"))
    sh("dvc", "repro", "ingest_labels", cwd=root)
    return root


def client_env(server) -> dict:
    return {**ENV, "MLFLOW_TRACKING_URI": server.tracking_uri}  # all a client is given


def mlflow_client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.tracking_uri)


def no_sqlite(root: Path) -> list[str]:
    """Files under ``root`` named *.db or starting with SQLite's header: MLflow's fallback store."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                if path.suffix == ".db" or f.read(16) == b"SQLite format 3\x00":
                    found.append(str(path.relative_to(root)))
    return found


def sweep_runs(server, name: str):
    """(experiment, the one parent run of sweep ``name``, its child runs)."""
    client = mlflow_client(server)
    experiment = client.get_experiment_by_name("movinet")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`movinet.sweep` = 'parent' and attributes.run_name = 'sweep-{name}'",
    )
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return experiment, parent, children


def check_sweep(server, name: str, tmp_path: Path):
    """One parent, a child per job (batch sizes 2 and 4), none lost or doubled; the parent's summary
    complete; every artifact in the S3 bucket, under the server's mlflow-artifacts location."""
    experiment, parent, children = sweep_runs(server, name)
    client, exp = mlflow_client(server), experiment.experiment_id
    assert experiment.artifact_location == f"mlflow-artifacts:/{exp}"
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 2
    assert sorted(c.data.params["data.loader.batch_size"] for c in children) == ["2", "4"]
    assert {c.info.status for c in children} == {"FINISHED"}
    named = client.search_runs([exp], filter_string=f"attributes.run_name = '{name}'")
    assert {r.info.run_id for r in named} == {c.info.run_id for c in children}  # no stray run
    ids = {c.info.run_id for c in children}
    assert parent.data.tags["best_run_id"] in ids

    summary = Path(client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path)))
    rows = list(csv.DictReader(summary.open()))
    assert {r["run_id"] for r in rows} == ids and {r["status"] for r in rows} == {"FINISHED"}
    by_id = {c.info.run_id: c for c in children}
    for row in rows:
        child = by_id[row["run_id"]]
        assert float(row["best_val_acc"]) == pytest.approx(child.data.metrics["best_val_acc"])
        assert f"data.loader.batch_size={child.data.params['data.loader.batch_size']}" in row["overrides"]

    keys = s3_keys(server.s3, f"mlartifacts/{exp}/")
    parent_key = f"mlartifacts/{exp}/{parent.info.run_id}/artifacts/sweep_summary.csv"
    assert {k for k in keys if k.startswith(f"mlartifacts/{exp}/{parent.info.run_id}/")} == {parent_key}
    stored = server.s3.client().get_object(Bucket=server.s3.bucket, Key=parent_key)["Body"].read()
    assert stored == summary.read_bytes()
    for run_id in ids:
        assert f"mlartifacts/{exp}/{run_id}/artifacts/checkpoint/model.pt" in keys
    return children


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_into_one_parent(server, project, tmp_path):
    done = sh(
        sys.executable,
        "pipelines/train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SWEEP,
        "train.name=joblib",
        cwd=project,
        env=client_env(server),
    )
    assert "Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes" in done.stdout + done.stderr
    first, second = sorted(check_sweep(server, "joblib", tmp_path), key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time  # the two jobs ran at the same time
    assert no_sqlite(project) == []


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_a_subprocess(server, project, tmp_path):
    sweep_dir = project / "outputs" / "submitit"
    sh(
        sys.executable,
        "pipelines/train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
        *SWEEP,
        "train.name=submitit",
        cwd=project,
        env=client_env(server),
    )
    children = check_sweep(server, "submitit", tmp_path)
    jobs = [d for d in (sweep_dir / ".submitit").iterdir() if d.name.isdigit()]  # submitit's job ids: pids
    assert len(jobs) == 2 and all((d / f"{d.name}_0_result.pkl").is_file() for d in jobs)
    records = [json.loads((sweep_dir / str(n) / "run.json").read_text()) for n in (0, 1)]
    assert {r["mlflow_run_id"] for r in records} == {c.info.run_id for c in children}
    assert all(r["finished"] for r in records)
    assert no_sqlite(project) == []


@pytest.mark.slow
def test_a_crashed_sweep_leaves_no_running_parent(server, project):
    """A job that fails ends the sweep before Hydra's on_multirun_end: the parent is closed at exit."""
    done = sh(
        sys.executable,
        "pipelines/train.py",
        "-m",
        *SWEEP,
        "train.name=crash",
        "train.init=/nonexistent/model.pt",
        cwd=project,
        env=client_env(server),
        check=False,
    )
    assert done.returncode == 1 and "/nonexistent/model.pt" in done.stderr
    _, parent, children = sweep_runs(server, "crash")
    assert parent.info.status == "FAILED" and children == []


@pytest.mark.slow
def test_register_promote_and_predict_through_the_server(server, project):
    env, client = client_env(server), mlflow_client(server)
    done = sh("dvc", "repro", "register@video", cwd=project, env=env)
    assert ran_stages(done.stdout) == {"train", "evaluate", "register@video"}
    record = json.loads((project / "models" / "registry" / "video.json").read_text())
    assert record["version"] == "1" and record["promoted"] is True
    first = client.get_model_version_by_alias("movinet-demo", "champion")
    assert (
        first.version == "1"
        and first.run_id == json.loads((project / "models/video/run.json").read_text())["mlflow_run_id"]
    )
    model = client.get_logged_model(first.source.removeprefix("models:/"))
    exp = model.experiment_id
    assert model.artifact_location == f"mlflow-artifacts:/{exp}/models/{model.model_id}/artifacts"
    assert f"mlartifacts/{exp}/models/{model.model_id}/artifacts/MLmodel" in s3_keys(server.s3)

    second = client.create_model_version(
        "movinet-demo", first.source, run_id=first.run_id, model_id=model.model_id
    ).version
    best = float(first.tags["test_acc"])
    client.set_model_version_tag("movinet-demo", second, "test_acc", str(best - 0.1))
    worse = sh(*CLI, "promote", "movinet-demo", "--version", second, cwd=project, env=env, check=False)
    assert worse.returncode == 1 and "rejected" in worse.stdout
    client.set_model_version_tag("movinet-demo", second, "test_acc", str(best + 0.1))
    better = sh(*CLI, "promote", "movinet-demo", "--version", second, cwd=project, env=env)
    assert f"movinet-demo v{second} promoted" in better.stdout
    assert client.get_model_version_by_alias("movinet-demo", "champion").version == second == "2"
    assert "v2 @champion" in sh(*CLI, "models", "movinet-demo", cwd=project, env=env).stdout

    video = sorted((project / "data" / "demo" / "videos").glob("*.mp4"))[0]
    by_alias = sh(*CLI, "predict", video, "--model", "models:/movinet-demo@champion", "--json", cwd=project, env=env)
    (line,) = by_alias.stdout.splitlines()
    answer = json.loads(line)
    classes = json.loads((project / "data" / "labels" / "classes.json").read_text())["classes"]
    scores = [p for _, p in answer["top"]]
    assert answer["video"] == str(video) and len(answer["top"]) == 5 and scores == sorted(scores, reverse=True)
    assert {label for label, _ in answer["top"]} <= set(classes)
    local = sh(*CLI, "predict", video, "--model", project / "models/video/model.pt", "--json", cwd=project, env=env)
    assert json.loads(local.stdout)["top"] == answer["top"]  # the registered model is the trained one
    assert no_sqlite(project) == []


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return reply.read().strip() == b"OK"
    except OSError:
        return False


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_command_serves_then_stops_everything_on_a_signal(stop):
    """``python -m movinet.tracking.team_server``: says it is up once it answers, then after Ctrl-C (or
    SIGTERM) exits 0 with no process left, no port held and the throwaway cluster deleted."""
    require_postgresql()
    ports = [free_port() for _ in range(3)]
    with service_folder("movinet-cli-") as folder:
        flags = ["--folder", folder, "--port", ports[0], "--s3-port", ports[1], "--pg-port", ports[2]]
        cmd = [sys.executable, "-m", "movinet.tracking.team_server", *map(str, flags)]
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        markers = (str(folder), f"-p {ports[1]}", f"--port {ports[0]}")
        try:
            deadline = time.monotonic() + 180
            while not any("clients set:" in line for line in lines):
                assert proc.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "the team server did not come up"
                time.sleep(0.2)
            assert f"  clients set:     MLFLOW_TRACKING_URI=http://127.0.0.1:{ports[0]}\n" in lines
            assert _health(ports[0]) and processes_with(*markers)  # up: the checks below see it running
            proc.send_signal(stop)
            assert proc.wait(timeout=60) == 0
            reader.join(timeout=10)
            assert lines[-1] == "stopped\n"
            assert [p for p in ports if _listening(p)] == []
            assert processes_with(*markers) == {}
            assert not (folder / "postgres" / "data").exists()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _stop_leftover_cluster(folder)


def _stop_leftover_cluster(folder: Path) -> None:
    """After a failed test only: PostgreSQL runs detached (pg_ctl), so a killed command leaves it."""
    data = folder / "postgres" / "data"
    if (data / "postmaster.pid").exists():
        pg_ctl = [str(postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *pg_ctl], cwd="/", capture_output=True, timeout=60)


def test_the_sweep_callback_travels_to_jobs():
    """joblib and submitit pickle Hydra's callbacks into each job: the MLflow client goes as its URI."""
    from movinet.tracking.client import TrackingClient
    from movinet.tracking.hydra_callback import MLflowSweepCallback

    callback = MLflowSweepCallback()
    callback.client, callback.parent_id = TrackingClient("http://127.0.0.1:1"), "abc"
    copy = pickle.loads(pickle.dumps(callback))
    assert (copy.client.uri, copy.parent_id) == ("http://127.0.0.1:1", "abc")
    assert type(copy.client.mlflow).__name__ == "MlflowClient"


def test_without_postgresql_the_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no PostgreSQL binaries .* apt-get install postgresql"):
        postgres_bin(tmp_path)


def test_the_slurm_launcher_extends_submitit_slurm():
    done = sh(
        sys.executable,
        "pipelines/train.py",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "--cfg",
        "hydra",
        "-p",
        "hydra.launcher",
        cwd=ROOT,
    )
    import yaml

    launcher = yaml.safe_load(done.stdout)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    expected = {"partition": "gpu", "gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 8, "timeout_min": 120}
    assert {k: launcher[k] for k in expected} == expected and launcher["array_parallelism"] == 8
