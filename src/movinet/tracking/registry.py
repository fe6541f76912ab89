"""The MLflow Model Registry: list versions and move the ``champion`` alias only on merit.

A version carries its test metrics as version tags (``test_acc``, ...). ``promote`` compares the
candidate with the current champion on one metric (higher is better) and moves the alias only when
the candidate is strictly better, or when forced; either way it records why on the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from movinet.tracking.store import with_retry

CHAMPION = "champion"


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    champion_before: str | None
    message: str


def _metric(version, metric: str) -> float | None:
    value = version.tags.get(metric)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def promote(client, name: str, version: str | None = None, metric: str = "test_acc",
            force: bool = False) -> Promotion:
    versions = with_retry(lambda: client.search_model_versions(f"name='{name}'"))
    if not versions:
        raise ValueError(f"no registered model named {name!r}")
    by_number = {str(v.version): v for v in versions}
    if version is None:
        version = str(max(int(v) for v in by_number))
    if str(version) not in by_number:
        raise ValueError(f"{name} has no version {version} (versions: {', '.join(sorted(by_number, key=int))})")
    candidate = by_number[str(version)]
    try:
        champion = with_retry(lambda: client.get_model_version_by_alias(name, CHAMPION))
    except Exception:  # no alias yet
        champion = None
    new = _metric(candidate, metric)
    if new is None and not force:
        raise ValueError(f"{name} v{version} has no {metric!r} tag to compare (use --force to promote anyway)")
    old = _metric(champion, metric) if champion is not None else None
    if champion is not None and str(champion.version) == str(version):
        return Promotion(False, str(version), str(version), f"v{version} is already the {CHAMPION}")
    if force:
        before = f"{old:.4f}" if old is not None else "none"
        promoted, why = True, (f"forced over v{champion.version} ({metric} {before})" if champion else "forced")
    elif champion is None:
        promoted, why = True, f"first {CHAMPION} ({metric} {new:.4f})"
    elif old is None or new > old:
        promoted, why = True, (f"{metric} {new:.4f} > {old:.4f} of v{champion.version}" if old is not None
                               else f"v{champion.version} has no {metric}")
    else:
        promoted, why = False, f"{metric} {new:.4f} is not better than {old:.4f} of v{champion.version}"
    if promoted:
        with_retry(lambda: client.set_registered_model_alias(name, CHAMPION, str(version)))
    decision = "promoted" if promoted else "rejected"
    with_retry(lambda: client.set_model_version_tag(name, str(version), "promotion", f"{decision}: {why}"))
    return Promotion(promoted, str(version), str(champion.version) if champion else None,
                     f"{name} v{version} {decision}: {why}")


def describe(client, name: str) -> list[dict]:
    """One row per version: number, aliases, test metrics from its tags, promotion note."""
    versions = with_retry(lambda: client.search_model_versions(f"name='{name}'"))
    aliases: dict[str, list[str]] = {}
    for alias, number in (with_retry(lambda: client.get_registered_model(name)).aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        rows.append({
            "version": str(v.version), "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
            **{k: t for k, t in v.tags.items() if k.startswith("test_")},
            "promotion": v.tags.get("promotion", ""), "run_id": v.run_id or "",
        })
    return rows
