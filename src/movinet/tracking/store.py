"""Where runs go: ``$MLFLOW_TRACKING_URI`` or an SQLite store at the project root.

The SQLite path is absolute and found from the project root even inside DVC's temporary
experiment copies (``<repo>/.dvc/tmp/exps/...``), so queued experiments log to the same store.
Artifacts go next to it (``mlartifacts/``); never the deprecated ``./mlruns`` file store.
SQLite allows one writer at a time: the store and experiment are created once under a file lock,
and writes retry when the database is locked, so parallel jobs do not fail.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from movinet.config import project_root

T = TypeVar("T")


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


def with_retry(fn: Callable[[], T], attempts: int = 10, delay: float = 0.2) -> T:
    """Run ``fn``, retrying while SQLite reports a locked database."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException / OperationalError wrap the same message
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay * (2**attempt))
    raise AssertionError("unreachable")


def ensure_experiment(name: str, uri: str) -> str:
    """Create the store (first use) and the experiment once; returns the experiment id."""
    from mlflow.tracking import MlflowClient

    def create() -> str:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=artifact_location())

    if not uri.startswith("sqlite:///"):
        return with_retry(create)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process migrates a new store; the others wait
        try:
            return with_retry(create)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
