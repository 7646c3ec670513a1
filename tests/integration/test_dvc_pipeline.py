"""`dvc repro` in a real git + DVC working copy of the project, on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images import image_folder

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def workdir(tmp_path: Path, project_root: Path) -> Path:
    """A fresh git + DVC copy of the pipeline files, with a tiny dataset as the source."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(project_root / name, work / name)
    skip_cache = shutil.ignore_patterns("tmp", "cache")
    shutil.copytree(project_root / ".dvc", work / ".dvc", ignore=skip_cache)
    shutil.copytree(
        project_root / "transferpilot",
        work / "transferpilot",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    image_folder(work / "data" / "tiny", {"red": 5, "green": 5})
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["prepare"]["source"] = "data/tiny"
    params["extract"]["workers"] = 0
    params["profile"]["measure_throughput"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], work)
    return work


def test_repro_twice_then_a_param_change(workdir: Path) -> None:
    first = run(["dvc", "repro"], workdir)
    for stage in ("prepare", "extract", "profile", "decide", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (workdir / "data" / "prepared" / "manifest.csv").is_file()
    decision = json.loads((workdir / "data" / "decision" / "decision.json").read_text())
    assert decision["quadrant"] == "small/different" and decision["strategy"] == "svm"
    trained = json.loads((workdir / "models" / "train" / "train.json").read_text())
    assert trained["strategy"] == "svm" and (workdir / "models" / "train" / "head.joblib").exists()

    shown = run(["dvc", "metrics", "show", "--json"], workdir)
    metrics = json.loads(shown.stdout)
    (entry,) = metrics.values()
    val = entry["data"]["reports/metrics.json"]["data"]["val"]
    assert 0.0 <= val["accuracy"] <= 1.0 and "balanced_accuracy" in val

    second = run(["dvc", "repro"], workdir)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout

    run(["dvc", "repro", "-q"], workdir)  # still nothing to do
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["prepare"]["seed"] = 7
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    third = run(["dvc", "repro"], workdir)
    assert "Running stage 'prepare'" in third.stdout

    params["decide"]["strategy"] = "linear"  # only decide (and what follows) re-runs
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    fourth = run(["dvc", "repro"], workdir)
    assert "Running stage 'decide'" in fourth.stdout and "Running stage 'train'" in fourth.stdout
    for stage in ("prepare", "extract", "profile"):
        assert f"Running stage '{stage}'" not in fourth.stdout

    params["train"]["cv_folds"] = 2  # a train parameter: only train and evaluate re-run
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    fifth = run(["dvc", "repro"], workdir)
    assert "Running stage 'train'" in fifth.stdout and "Running stage 'evaluate'" in fifth.stdout
    for stage in ("prepare", "extract", "profile", "decide"):
        assert f"Running stage '{stage}'" not in fifth.stdout
