"""`dvc repro` in a real git + DVC working copy of the project, on tiny data: the pipeline
runs once per module; each test changes a copy of the finished project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.projects import copy_project, run, working_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, project_root: Path) -> tuple[Path, str]:
    """A git + DVC copy of the pipeline files on a tiny dataset, after its first
    ``dvc repro``, and what that repro printed."""
    work = working_copy(tmp_path_factory.mktemp("dvc") / "project", project_root)
    return work, run(["dvc", "repro"], work).stdout


@pytest.fixture
def workdir(finished: tuple[Path, str], tmp_path: Path) -> Path:
    return copy_project(finished[0], tmp_path / "project")


def set_params(work: Path, **sections: dict) -> dict:
    params = yaml.safe_load((work / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] |= values
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def ran(result) -> set[str]:
    """The stages a ``dvc repro`` ran."""
    return {line.split("'")[1] for line in result.stdout.splitlines() if "Running stage" in line}


def test_the_first_repro_runs_every_stage_and_records_metrics(finished: tuple[Path, str]) -> None:
    work, first = finished
    for stage in ("prepare", "extract", "profile", "decide", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    assert (work / "data" / "prepared" / "manifest.csv").is_file()
    decision = json.loads((work / "data" / "decision" / "decision.json").read_text())
    assert decision["quadrant"] == "small/different" and decision["strategy"] == "svm"
    trained = json.loads((work / "models" / "train" / "train.json").read_text())
    assert trained["strategy"] == "svm" and (work / "models" / "train" / "head.joblib").exists()

    shown = run(["dvc", "metrics", "show", "--json"], work)
    metrics = json.loads(shown.stdout)
    (entry,) = metrics.values()
    val = entry["data"]["reports/metrics.json"]["data"]["val"]
    assert 0.0 <= val["accuracy"] <= 1.0 and "balanced_accuracy" in val


def test_a_second_repro_runs_nothing(workdir: Path) -> None:
    second = run(["dvc", "repro"], workdir)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout
    run(["dvc", "repro", "-q"], workdir)  # still nothing to do


def test_a_param_change_reruns_its_stage_and_what_follows_only(workdir: Path) -> None:
    set_params(workdir, prepare={"seed": 7})
    assert "prepare" in ran(run(["dvc", "repro"], workdir))

    set_params(workdir, decide={"strategy": "linear"})  # only decide (and what follows)
    assert ran(run(["dvc", "repro"], workdir)) == {"decide", "train", "evaluate"}

    # A train setting reaches train through the decision's plan: one the linear head reads
    # re-trains it; one it does not read (a fine-tuning learning rate) re-runs decide only.
    set_params(workdir, train={"cv_folds": 2})
    fifth = ran(run(["dvc", "repro"], workdir))
    assert {"train", "evaluate"} <= fifth and not fifth & {"prepare", "extract", "profile"}
    set_params(workdir, train={"lr": 0.01})
    assert ran(run(["dvc", "repro"], workdir)) == {"decide"}


def test_editing_the_fine_tuning_loop_reruns_only_the_stages_that_fine_tune(
    workdir: Path,
) -> None:
    loop = workdir / "transferpilot" / "finetune" / "_loop.py"
    loop.write_text(loop.read_text() + "\n# an edit\n")
    # decide runs fine-tuning trials, train fine-tunes, evaluate reads its curves
    assert ran(run(["dvc", "repro"], workdir)) == {"decide", "train", "evaluate"}


def test_decide_runs_fine_tuning_trials_and_records_them_reproducibly(workdir: Path) -> None:
    # On a machine pinned this slow, a trial is a third of the full run, and the tiny set's
    # first rung fits it. decide runs them and records them; forced to run again, it writes
    # the same bytes (fixed seeds; a schedule from estimates, not the clock).
    set_params(workdir, decide={"strategy": "auto", "train_images_per_s": 0.5})
    result = run(["dvc", "repro"], workdir)
    assert "decide" in ran(result)
    assert "trial rung 0" in result.stdout + result.stderr
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
