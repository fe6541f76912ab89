"""Where runs go: ``$MLFLOW_TRACKING_URI`` or an SQLite store at the project root.

The SQLite path is absolute and found from the project root even inside DVC's temporary
experiment copies (``<repo>/.dvc/tmp/exps/...``), so queued experiments log to the same store.
Artifacts go next to it (``mlartifacts/``); never the deprecated ``./mlruns`` file store; with a
tracking server (``http://``), where the server puts them (README, "A shared tracking server"). The store
and the experiment are created once under a file lock, so parallel jobs do not race to migrate it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from movinet.config import project_root
from movinet.tracking.client import TrackingClient


def store_root(root: str | Path | None = None) -> Path:
    path = project_root(root)
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def tracking_uri(configured: str | None = None, root: str | Path | None = None) -> str:
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{store_root(root) / 'mlflow.db'}"


def artifact_location(root: str | Path | None = None) -> str:
    return (store_root(root) / "mlartifacts").as_uri()


def is_server(uri: str) -> bool:
    """A tracking server decides where artifacts go (``--artifacts-destination``, proxied with
    ``--serve-artifacts``): a client must not point an experiment at its own disk."""
    return uri.startswith(("http://", "https://"))


def ensure_experiment(name: str, uri: str) -> str:
    """Create the store (first use) and the experiment once; returns the experiment id."""

    def create() -> str:
        client = TrackingClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=None if is_server(uri) else artifact_location())
        except Exception:  # another client of the same server created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    if not uri.startswith("sqlite:///"):
        return create()
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process migrates a new store; the others wait
        try:
            return create()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
