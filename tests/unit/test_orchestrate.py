"""The orchestration helpers the flow and `transferpilot run` share: checks before a run,
the workspace put back after it, run names."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferpilot import orchestrate
from transferpilot.errors import ConfigError, DataError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("prepare:\n  source: images\ntrain:\n  cv_folds: 5\n")
    return tmp_path


def test_a_run_is_checked_without_writing_anything(project: Path) -> None:
    before = (project / "params.yaml").read_bytes()
    params = orchestrate.check_run(project, ["train.cv_folds=3"])
    assert params.train.cv_folds == 3
    with pytest.raises(DataError, match="missing does not exist"):
        orchestrate.check_run(
            project, orchestrate.requested_overrides(project, data=Path("missing"))
        )
    with pytest.raises(ConfigError, match=r"train\.colour"):
        orchestrate.check_run(project, ["train.colour=red"])
    (project / "images" / "a").rmdir()
    (project / "images").rmdir()
    with pytest.raises(DataError, match=r"prepare\.source"):  # the committed source, too
        orchestrate.check_run(project, [])
    assert (project / "params.yaml").read_bytes() == before
    assert not [p for p in project.iterdir() if p.name.startswith(".params.")]  # no temp left


def test_overrides_are_put_back_after_the_run(project: Path) -> None:
    """Without a dvc.lock before the run (nothing to check out), the files alone."""
    saved = orchestrate.snapshot_workspace(project)
    orchestrate.apply_overrides(project, ["train.cv_folds=2"])
    (project / "dvc.lock").write_text("schema: '2.0'\n")  # the run's lock
    assert "cv_folds: 2" in (project / "params.yaml").read_text()
    assert orchestrate.restore_workspace(project, saved) is True
    assert (project / "params.yaml").read_bytes() == saved["params.yaml"]
    assert (project / "params.yaml").stat().st_mode & 0o777 == 0o644
    assert not (project / "dvc.lock").exists()  # there was none before
    assert orchestrate.restore_workspace(project, saved) is False  # nothing to put back


def test_the_experiments_name_is_read_from_what_dvc_printed() -> None:
    from transferpilot.orchestrate.dvc import experiment_name

    assert experiment_name("Experiment has been saved as: ready-love\n") == "ready-love"
    assert experiment_name("Created experiment ref: 'folds2'") == "folds2"
    assert experiment_name("nothing here") is None


def test_runs_are_named_after_the_dataset_and_the_decision(project: Path) -> None:
    assert orchestrate.dataset_name(project) == "images"
    assert orchestrate.dataset_name(project, Path("/x/my photos")) == "my-photos"
    assert orchestrate.dataset_name(project, Path("lists/birds.csv")) == "birds"
    run_id = "1a2b3c4d-0000-0000-0000-000000000000"
    assert orchestrate.run_name("digits", run_id) == "digits-1a2b3c4d"
    decision = {"strategy": "svm", "layer": "blocks.6"}
    assert orchestrate.run_name("digits", run_id, decision) == "digits-svm-blocks6-1a2b3c4d"
