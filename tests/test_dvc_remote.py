"""DVC remote storage on S3 for real: moto's S3 server on 127.0.0.1 as the remote of a tiny project
that ran ``dvc repro train`` (demo data, frame cache, labels, model); ``dvc push``, then a fresh
``git clone`` pulls byte-identical outputs, reports them up to date and predicts with the pulled model.
Credentials live only in ``.dvc/config.local`` (``dvc remote modify --local``), never in git."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from services import ENV, S3_CREDENTIALS, digests, s3_keys, s3_server, sh, tiny_project

pytestmark = pytest.mark.slow

BUCKET = "dvc"
OUTS = ("data/demo", "data/frames", "data/labels", "models/video")  # what `dvc repro train` makes
NO_AWS = {k: v for k, v in ENV.items() if not k.startswith("AWS_")}  # credentials from DVC's config only
CLI = [sys.executable, "-m", "movinet.cli"]


@pytest.fixture(scope="module")
def s3():
    with s3_server(BUCKET) as server:
        yield server


def set_credentials(root: Path) -> None:
    for option, variable in (("access_key_id", "AWS_ACCESS_KEY_ID"), ("secret_access_key", "AWS_SECRET_ACCESS_KEY")):
        sh("dvc", "remote", "modify", "--local", "storage", option, S3_CREDENTIALS[variable], cwd=root, env=NO_AWS)


@pytest.fixture(scope="module")
def origin(s3, tmp_path_factory):
    """The tiny project after ``dvc repro train``, committed, with the S3 remote configured (the
    endpoint in git, the credentials local), then ``dvc push``ed: (root, the push's output)."""
    root = tiny_project(tmp_path_factory.mktemp("origin"))
    sh("dvc", "repro", "train", cwd=root, env=NO_AWS)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "tiny repro", cwd=root)
    sh("dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvcstore", cwd=root, env=NO_AWS)
    sh("dvc", "remote", "modify", "storage", "endpointurl", s3.endpoint, cwd=root, env=NO_AWS)
    set_credentials(root)
    sh("git", "commit", "-qam", "S3 remote", cwd=root)
    return root, sh("dvc", "push", cwd=root, env=NO_AWS)


def predict(root: Path, video: Path) -> dict:
    done = sh(*CLI, "predict", video, "--model", root / "models" / "video" / "model.pt", "--json", cwd=root, env=NO_AWS)
    assert done.returncode == 0
    (line,) = done.stdout.splitlines()
    return json.loads(line)


def test_push_uploads_the_whole_cache_and_keeps_credentials_out_of_git(origin, s3):
    root, push = origin
    cache = root / ".dvc" / "cache"
    cached = {f"dvcstore/{p.relative_to(cache).as_posix()}" for p in (cache / "files").rglob("*") if p.is_file()}
    assert cached and s3_keys(s3, "dvcstore/") == cached  # every object the outputs need (not the run cache)
    assert push.stdout.strip().endswith(f"{len(cached)} files pushed")
    assert "Everything is up to date." in sh("dvc", "push", cwd=root, env=NO_AWS).stdout

    config = (root / ".dvc" / "config").read_text()
    assert f"endpointurl = {s3.endpoint}" in config and "url = s3://dvc/dvcstore" in config
    assert "access_key_id" not in config and "secret_access_key" not in config
    assert "secret_access_key = testing" in (root / ".dvc" / "config.local").read_text()
    assert sh("git", "ls-files", ".dvc", cwd=root).stdout.split() == [".dvc/.gitignore", ".dvc/config"]
    assert sh("git", "status", "--porcelain", cwd=root).stdout == ""  # dvc.lock and all committed


def test_a_fresh_clone_pulls_identical_outputs_and_predicts(origin, s3, tmp_path):
    root, _ = origin
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", root, clone, cwd=tmp_path)
    assert not any((clone / out).exists() for out in OUTS)

    refused = sh("dvc", "pull", "--with-deps", "train", cwd=clone, env=NO_AWS, check=False)
    assert refused.returncode == 1 and "credentials" in (refused.stdout + refused.stderr).lower()
    set_credentials(clone)  # each user's own, in their .dvc/config.local
    pulled = sh("dvc", "pull", "--with-deps", "train", cwd=clone, env=NO_AWS)
    assert f"{len(s3_keys(s3, 'dvcstore/'))} files fetched" in pulled.stdout

    for out in OUTS:
        theirs = digests(clone / out)
        assert theirs and theirs == digests(root / out), out  # byte for byte
    assert (clone / "models" / "video" / "model.pt").is_file()
    status = sh("dvc", "status", "--with-deps", "train", cwd=clone, env=NO_AWS)
    assert status.stdout.strip() == "Data and pipelines are up to date."
    assert json.loads(sh("dvc", "status", "--json", "--with-deps", "train", cwd=clone, env=NO_AWS).stdout) == {}
    cloud = sh("dvc", "status", "--cloud", "--with-deps", "train", cwd=clone, env=NO_AWS)
    assert cloud.stdout.strip() == "Cache and remote 'storage' are in sync."

    video = sorted((clone / "data" / "demo" / "videos").glob("*.mp4"))[0]
    answer = predict(clone, video)
    classes = json.loads((clone / "data" / "labels" / "classes.json").read_text())["classes"]
    assert answer["video"] == str(video) and len(answer["top"]) == 5 and {c for c, _ in answer["top"]} <= set(classes)
    original = predict(root, root / video.relative_to(clone))
    assert original["top"] == answer["top"]  # the same model on the same video: the same answer
