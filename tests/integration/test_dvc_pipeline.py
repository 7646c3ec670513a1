"""`dvc repro` in a real git + DVC working copy of the project, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.projects import run, working_copy

pytestmark = pytest.mark.slow


@pytest.fixture
def workdir(tmp_path: Path, project_root: Path) -> Path:
    """A fresh git + DVC copy of the pipeline files, with a tiny dataset as the source."""
    return working_copy(tmp_path / "project", project_root)


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

    # A train setting reaches train through the decision's plan: one the linear head reads
    # re-trains it; one it does not read (a fine-tuning learning rate) re-runs decide only.
    params["train"]["cv_folds"] = 2
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    fifth = run(["dvc", "repro"], workdir)
    assert "Running stage 'train'" in fifth.stdout and "Running stage 'evaluate'" in fifth.stdout
    for stage in ("prepare", "extract", "profile"):
        assert f"Running stage '{stage}'" not in fifth.stdout
    params["train"]["lr"] = 0.01
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    sixth = run(["dvc", "repro"], workdir)
    assert "Running stage 'decide'" in sixth.stdout
    assert "Running stage 'train'" not in sixth.stdout
    assert "Running stage 'evaluate'" not in sixth.stdout

    # Fine-tuning trials: on a machine pinned this slow, a trial is a third of the full run,
    # and the tiny set's first rung fits it. decide runs them and records them; forced to run
    # again, it writes the same bytes (fixed seeds; a schedule from estimates, not the clock).
    params["decide"] |= {"strategy": "auto", "train_images_per_s": 0.5}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    seventh = run(["dvc", "repro"], workdir)
    assert "Running stage 'decide'" in seventh.stdout
    assert "trial rung 0" in seventh.stdout + seventh.stderr
    written = workdir / "data" / "decision" / "decision.json"
    decision = json.loads(written.read_text())
    trials = decision["evidence"]["trials"]
    first = trials["trials"][0]
    assert (first["rung"], first["epochs"], first["input_size"]) == (0, 1, 64)
    assert first["held_in"] == 2 and first["images"] == 6  # 8 training images, 1 per class held
    assert trials["planned_s"] <= trials["budget_s"]
    rows = decision["candidates"]
    scored = [c for c in rows if c["strategy"] == "finetune" and c["score"] is not None]
    assert scored and scored[0]["input_size"] == 64
    before = written.read_bytes()
    run(["dvc", "repro", "-f", "-s", "decide"], workdir)
    assert written.read_bytes() == before


def test_experiment_metrics_and_plots(workdir: Path) -> None:
    run(["dvc", "repro", "-q"], workdir)
    settings = ["decide.strategy=finetune", "train.epochs=1", "train.input_size=32"]
    run(["dvc", "exp", "run", "-n", "ft", *(a for s in settings for a in ("-S", s))], workdir)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], workdir).stdout)
    experiments = [e for row in shown for e in (row.get("experiments") or [])]
    (ft,) = [e for e in experiments if e.get("name") == "ft"]
    revision = ft["revs"][0]["data"]
    assert revision["params"]["params.yaml"]["data"]["decide"]["strategy"] == "finetune"
    assert "accuracy" in revision["metrics"]["reports/metrics.json"]["data"]["val"]
    trained = json.loads((workdir / "models" / "train" / "train.json").read_text())
    assert trained["strategy"] == "finetune" and trained["epochs_run"] == 1

    diff = json.loads(run(["dvc", "metrics", "diff", "--json", "HEAD"], workdir).stdout)
    assert "reports/metrics.json" in diff or diff == {}  # HEAD has no metrics committed
    run(["dvc", "plots", "show", "-o", "plots_out"], workdir)
    page = (workdir / "plots_out" / "index.html").read_text()
    assert "confusion_csv" in page and "similarity.png" in page  # the vega plot and an image
