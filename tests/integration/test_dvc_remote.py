"""DVC moves the pipeline's outputs between machines: push from one clone, pull into
another, and nothing is recomputed; an experiment travels the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.projects import git_commit, run, tiny_model, use_remote, working_copy, write_params

pytestmark = pytest.mark.slow


def test_the_default_remote_is_outside_the_repository(project_root: Path) -> None:
    shown = run(["dvc", "remote", "list"], project_root).stdout.split()
    assert shown[0] == "local" and "(default)" in shown
    config = (project_root / ".dvc" / "config").read_text()
    assert "url = ~/.cache/transferpilot/dvc-remote" in config  # a user cache folder


def test_push_then_a_second_clone_pulls_and_recomputes_nothing(
    tmp_path: Path, project_root: Path
) -> None:
    first = working_copy(tmp_path / "first", project_root)
    write_params(first, {"model": tiny_model(tmp_path / "weights" / "tiny.safetensors")})
    git_commit(first, "a tiny model")
    remote = tmp_path / "remote"
    use_remote(first, remote)
    run(["dvc", "repro"], first)
    git_commit(first, "results")
    pushed = run(["dvc", "push"], first)
    assert "pushed" in pushed.stdout and any(remote.rglob("*"))

    shared = tmp_path / "shared.git"  # the team's Git server, for the code and dvc.lock
    run(["git", "init", "-q", "--bare", str(shared)], tmp_path)
    run(["git", "remote", "add", "origin", str(shared)], first)
    run(["git", "push", "-q", "origin", "HEAD:main"], first)

    second = tmp_path / "second"  # another machine: git clone, the same DVC remote
    run(["git", "clone", "-q", "-b", "main", str(shared), str(second)], tmp_path)
    use_remote(second, remote)
    assert not (second / "data" / "features").exists()
    run(["dvc", "pull"], second)
    status = run(["dvc", "status"], second)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    again = run(["dvc", "repro"], second)
    assert "Running stage" not in again.stdout
    metrics = "reports/metrics.json"
    assert (second / metrics).read_text() == (first / metrics).read_text()
    for path in ("models/train/train.json", "data/decision/decision.json"):
        assert json.loads((second / path).read_text()) == json.loads((first / path).read_text())

    # An experiment run on the second machine reaches the first: `dvc exp push` sends its
    # Git refs to the Git server and its outputs to the DVC remote, `dvc exp pull` both back.
    run(["dvc", "exp", "run", "-n", "folds2", "-S", "train.cv_folds=2"], second)
    run(["dvc", "exp", "push", "origin", "folds2"], second)
    run(["dvc", "exp", "pull", "origin", "folds2"], first)
    run(["dvc", "exp", "apply", "folds2"], first)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], first).stdout
    assert yaml.safe_load((first / "params.yaml").read_text())["train"]["cv_folds"] == 2
    assert (first / metrics).read_text() == (second / metrics).read_text()
