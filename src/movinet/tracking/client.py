"""The one way the project talks to MLflow: a client whose every call retries while the store is busy.

SQLite allows one writer at a time, so parallel jobs (a sweep, DVC's queue, two stages) meet
"database is locked"; each call is retried with backoff instead of failing the run. A retry must
not log anything twice, so metrics, params and tags go as one batch per call with one timestamp:
the store takes a batch whole or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

T = TypeVar("T")
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value
BATCH = 1000  # MLflow's limit of metrics per log_batch


def retry(fn: Callable[[], T], attempts: int = 10, delay: float = 0.2) -> T:
    """Run ``fn``, retrying while SQLite reports a locked database."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException / OperationalError wrap the same message
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay * (2**attempt))
    raise AssertionError("unreachable")


class TrackingClient:
    """``mlflow.tracking.MlflowClient`` with retries on every call, plus idempotent batch logging."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.mlflow = MlflowClient(uri)

    def __reduce__(self):
        """Pickled as its URI: Hydra's joblib and submitit launchers pickle the sweep callback, which
        holds a client, into every job (an MlflowClient's store and sessions do not travel)."""
        return (type(self), (self.uri,))

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("mlflow", "uri"):  # not set yet (a half-built object)
            raise AttributeError(name)
        attr = getattr(self.mlflow, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: retry(lambda: attr(*args, **kwargs))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        for start in range(0, len(batch), BATCH):
            chunk = batch[start : start + BATCH]
            retry(partial(self.mlflow.log_batch, run_id, metrics=chunk))

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        batch = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
        for start in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
            chunk = batch[start : start + 100]
            retry(partial(self.mlflow.log_batch, run_id, params=chunk))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(key, str(value)) for key, value in tags.items()]
        retry(lambda: self.mlflow.log_batch(run_id, tags=batch))
