"""The MLflow Model Registry: list versions and move the ``champion`` alias only on merit.

A version carries its test metrics as version tags (``test_acc``, ...). ``promote`` compares the
candidate with the current champion on one metric (higher is better) and moves the alias only when
the candidate is strictly better, or when forced; either way it records why on the candidate.
The champion is read from the registered model's aliases: an error reading it is an error, never
"no champion" (which would promote a worse model).

Promotions of one model are serialised: between reading the champion and moving the alias, another
promoter could move it, and the last writer would win even when worse. The lock is a registered model
named ``<name>.promotion-lock``: creating a registered model is atomic in every MLflow store (a
unique name), so it works the same on a SQLite file and on a team's tracking server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from movinet.tracking.client import TrackingClient

CHAMPION = "champion"
LOCK_SUFFIX = ".promotion-lock"
LOCK_WAIT_S = 60.0  # how long a promotion waits for another one
LOCK_STALE_S = 300.0  # a lock older than this was left by a promoter that died: it is broken


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    champion_before: str | None
    message: str


def _metric(version, metric: str) -> float | None:
    value = version.tags.get(metric) if version is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _champion(client: TrackingClient, name: str):
    number = (client.get_registered_model(name).aliases or {}).get(CHAMPION)
    return client.get_model_version(name, str(number)) if number is not None else None


def _decide(candidate, champion, metric: str, force: bool) -> tuple[bool, str]:
    """(promote?, why) for ``candidate`` against the current ``champion`` (None: there is none)."""
    new, old = _metric(candidate, metric), _metric(champion, metric)
    if new is None and not force:
        raise ValueError(f"v{candidate.version} has no {metric!r} tag to compare (use --force to promote anyway)")
    if force:
        before = f"{old:.4f}" if old is not None else "none"
        return True, (f"forced over v{champion.version} ({metric} {before})" if champion else "forced")
    if champion is None:
        return True, f"first {CHAMPION} ({metric} {new:.4f})"
    if old is None:
        return True, f"v{champion.version} has no {metric}"
    if new > old:
        return True, f"{metric} {new:.4f} > {old:.4f} of v{champion.version}"
    return False, f"{metric} {new:.4f} is not better than {old:.4f} of v{champion.version}"


@contextmanager
def promotion_lock(client: TrackingClient, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``<name>.promotion-lock`` (a registered model: its creation is atomic) while promoting."""
    from mlflow.exceptions import MlflowException

    lock, deadline = name + LOCK_SUFFIX, time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(lock, tags={"created": str(time.time())}, description="promotion lock")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if _break_if_stale(client, lock):
            continue
        if time.monotonic() > deadline:
            raise ValueError(f"another promotion of {name} holds {lock!r}; retry (or delete it if no promotion runs)")
        time.sleep(0.1)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _break_if_stale(client: TrackingClient, lock: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        created = float(client.get_registered_model(lock).tags.get("created", "0"))
    except MlflowException:
        return True  # released meanwhile: try again at once
    if time.time() - created > LOCK_STALE_S:
        client.delete_registered_model(lock)
        return True
    return False


def promote(
    client: TrackingClient, name: str, version: str | None = None, metric: str = "test_acc", force: bool = False
) -> Promotion:
    """Move the champion alias to ``version`` (default: the latest) if it is better, under the lock."""
    with promotion_lock(client, name):
        return _promote(client, name, version, metric, force)


def _promote(client: TrackingClient, name: str, version: str | None, metric: str, force: bool) -> Promotion:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise ValueError(f"no registered model named {name!r}")
    by_number = {str(v.version): v for v in versions}
    version = str(version) if version is not None else str(max(int(v) for v in by_number))
    if version not in by_number:
        raise ValueError(f"{name} has no version {version} (versions: {', '.join(sorted(by_number, key=int))})")
    champion = _champion(client, name)
    if champion is not None and str(champion.version) == version:
        return Promotion(False, version, version, f"v{version} is already the {CHAMPION}")
    try:
        promoted, why = _decide(by_number[version], champion, metric, force)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = "promoted" if promoted else "rejected"
    client.set_model_version_tag(name, version, "promotion", f"{decision}: {why}")
    return Promotion(
        promoted, version, str(champion.version) if champion else None, f"{name} v{version} {decision}: {why}"
    )


def describe(client: TrackingClient, name: str) -> list[dict]:
    """One row per version: number, aliases, test metrics from its tags, promotion note."""
    versions = client.search_model_versions(f"name='{name}'")
    aliases: dict[str, list[str]] = {}
    for alias, number in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        rows.append(
            {
                "version": str(v.version),
                "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
                **{k: t for k, t in v.tags.items() if k.startswith("test_")},
                "promotion": v.tags.get("promotion", ""),
                "run_id": v.run_id or "",
            }
        )
    return rows
