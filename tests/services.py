"""Real services for the tests, started through ``movinet.tracking.team_server`` on 127.0.0.1, and
the tiny project copy they run against. Not a test module: the tests' fixtures wrap these.

Every helper is a context manager that stops what it started and deletes what it made, also when
the test fails. The services' folders are made under the system temp folder, not pytest's
``tmp_path``: pytest's is private to root (0700), and PostgreSQL runs as an unprivileged user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pipeline import ENV, ROOT, TINY

from movinet.tracking.team_server import S3_CREDENTIALS, S3Server, TeamServer, postgres_bin

__all__ = [
    "ENV",
    "S3_CREDENTIALS",
    "digests",
    "processes_with",
    "require_postgresql",
    "s3_keys",
    "s3_server",
    "service_folder",
    "sh",
    "team_server",
    "tiny_project",
]


def sh(*cmd, cwd: Path, env: dict | None = None, timeout: float = 600, check: bool = True):
    """tests/test_pipeline.py's ``sh`` with an environment of one's own (ENV: no MLFLOW_*, no DVC_*)."""
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


@contextlib.contextmanager
def service_folder(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)  # PostgreSQL's user enters it to reach its cluster folder
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def require_postgresql() -> None:
    """Skip where PostgreSQL is not installed (a developer's machine); CI must have it (.ci/run installs it)."""
    try:
        postgres_bin()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"CI must install PostgreSQL (.ci/run does): {exc}") from None
        pytest.skip(str(exc))


@contextlib.contextmanager
def team_server() -> Iterator[TeamServer]:
    """PostgreSQL + moto S3 + mlflow server on free ports; everything stopped and deleted after."""
    require_postgresql()
    with service_folder("movinet-team-") as folder, TeamServer(folder, port=0, s3_port=0, pg_port=0) as server:
        yield server


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[S3Server]:
    """moto's S3 alone on a free port, with ``bucket`` created."""
    with service_folder("movinet-s3-") as folder, S3Server(folder, port=0, bucket=bucket) as server:
        yield server


def s3_keys(server: S3Server, prefix: str = "") -> set[str]:
    """Every object key under ``prefix`` in the server's bucket (all pages)."""
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def tiny_project(root: Path) -> Path:
    """A git + DVC copy of the project with ``params.yaml`` composed with ``debug=tiny``: what
    tests/test_pipeline.py's ``project`` fixture makes, plus the project's .gitignore (the copy is
    committed after a repro, without the MLflow store or Hydra's outputs)."""
    for name in ("conf", "pipelines", "src"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, root / name)
    for cmd in (
        ("git", "init", "-q"),
        ("git", "config", "user.email", "t@example.com"),
        ("git", "config", "user.name", "test"),
        ("dvc", "init", "-q"),
        ("dvc", "config", "core.analytics", "false"),
        (sys.executable, "-m", "movinet.cli", "params", *TINY),
        ("git", "add", "-A"),
        ("git", "commit", "-qm", "tiny project"),
    ):
        sh(*cmd, cwd=root)
    return root


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path: two trees are equal byte for byte."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def processes_with(*markers: str) -> dict[int, str]:
    """Live processes (pid: command line) whose command line contains any of ``markers``: what a
    stopped server must not leave behind."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited meanwhile
            continue
        if cmdline and any(m in cmdline for m in markers):
            found[int(entry.name)] = cmdline
    return found
