"""The Prefect flow on a real git + DVC working copy, under one session-wide test server:
every stage as a task, artifacts, overrides recorded as a DVC experiment, retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.projects import run, working_copy

pytestmark = pytest.mark.slow

STAGES = ["prepare", "extract", "profile", "decide", "train", "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, project_root: Path) -> Path:
    return working_copy(tmp_path_factory.mktemp("flow") / "project", project_root)


@pytest.fixture(scope="module")
def first_run(project: Path, prefect_harness: None) -> tuple[Any, dict]:
    from flows.pipeline import pipeline

    state = pipeline(project=project, retry_delay_seconds=0, return_state=True)
    return state, state.result()


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def flow_run_of(state: Any) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def task_states(flow_run_id: Any) -> dict[str, str]:
    """``{task run name: final state name}`` of one flow run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r.state.name for r in runs}


def test_the_run_is_named_tagged_and_versioned_after_what_it_did(first_run) -> None:
    state, result = first_run
    run = flow_run_of(state)
    decision = result["decision"]
    layer = decision["layer"].replace(".", "")
    assert run.name.startswith(f"tiny-{decision['strategy']}-{layer}-"), run.name
    assert {"dataset:tiny", f"strategy:{decision['strategy']}"} <= set(run.tags)
    assert run.flow_version and len(run.flow_version.split("+")[0]) >= 7  # the git commit
    names = set(task_states(run.id))
    assert {"params", "publish", *STAGES} <= names  # no random suffixes


def test_every_stage_runs_as_a_task_and_artifacts_are_published(first_run, project: Path) -> None:
    state, result = first_run
    assert state.is_completed()
    assert list(result["stages"]) == STAGES  # DVC's order
    assert {r["status"] for r in result["stages"].values()} == {"ran"}
    assert result["report"] == "reports/report.md" and (project / result["report"]).is_file()
    assert result["experiment"] is None  # nothing overridden, nothing recorded

    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert set(artifacts) >= {
        "transferpilot-decision",
        "transferpilot-metrics",
        "transferpilot-report",
    }
    decision = json.loads((project / "data" / "decision" / "decision.json").read_text())
    summary = artifacts["transferpilot-decision"].data
    assert decision["quadrant"] in summary and decision["reason"] in summary
    table = artifacts["transferpilot-metrics"].data
    rows = {r["metric"]: r for r in (json.loads(table) if isinstance(table, str) else table)}
    accuracy = rows["accuracy"]["val"]  # metric x split, rounded for the page
    assert 0.0 <= accuracy <= 1.0 and accuracy == round(accuracy, 3)
    assert f"val accuracy {accuracy:.3f}" in artifacts["transferpilot-metrics"].description
    report = artifacts["transferpilot-report"].data
    for title in ("Data", "Profile", "Decision", "Training", "Metrics", "Mistakes"):
        assert f"## {title}" in report
    # figures embedded (the UI renders data URIs), and no path of this machine
    assert report.count("](data:image/png;base64,") >= 3
    assert str(project) not in report and "figure:" not in report


def test_an_override_lives_for_its_run_only_as_a_dvc_experiment(
    first_run, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import pipeline
    from transferpilot import orchestrate as orchestrate

    started: list[str] = []
    real = orchestrate.repro_stage

    def spy(project_dir: Path, stage: str, **kwargs: Any):
        started.append(stage)
        return real(project_dir, stage, **kwargs)

    monkeypatch.setattr(orchestrate, "repro_stage", spy)

    committed = (project / "params.yaml").read_text()
    committed_params = yaml.safe_load(committed)
    lock = (project / "dvc.lock").read_bytes()
    report = (project / "reports" / "report.md").read_bytes()
    result = pipeline(
        project=project, params={"train.cv_folds": 2}, experiment="folds2", retry_delay_seconds=0
    )
    status = {stage: r["status"] for stage, r in result["stages"].items()}
    assert status == {  # a train setting reaches train through the decision's plan
        "prepare": "skipped",
        "extract": "skipped",
        "profile": "skipped",
        "decide": "ran",
        "train": "ran",
        "evaluate": "ran",
    }
    # the override lived for that run only: it is in the experiment, and the workspace is
    # as it was (as `dvc exp run --temp` leaves it): params, lock, outputs, a clean status
    assert (project / "params.yaml").read_text() == committed
    assert (project / "dvc.lock").read_bytes() == lock
    assert (project / "reports" / "report.md").read_bytes() == report
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {}
    assert result["experiment"] == "folds2" and result["workspace_restored"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = [e for row in shown for e in (row.get("experiments") or [])]
    (folds2,) = [e for e in experiments if e.get("name") == "folds2"]
    revision = folds2["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert revision["train"]["cv_folds"] == 2

    assert started == ["decide", "train", "evaluate"]  # one `dvc status` cleared the others

    started.clear()  # the next plain (or scheduled) run finds the committed state: no work
    again = pipeline(project=project, retry_delay_seconds=0, return_state=True)
    assert yaml.safe_load((project / "params.yaml").read_text()) == committed_params
    assert again.result()["experiment"] is None
    assert {r["status"] for r in again.result()["stages"].values()} == {"skipped"}
    assert started == []  # no `dvc repro` process at all
    states = task_states(again.state_details.flow_run_id)
    assert {states[stage] for stage in STAGES} == {"Skipped"}  # not six "Completed"


def test_a_bad_override_stops_before_any_stage(first_run, project: Path) -> None:
    from flows.pipeline import pipeline
    from transferpilot.errors import ConfigError

    before = (project / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train\.cv_folds"):
        pipeline(project=project, params={"train.cv_folds": 1}, retry_delay_seconds=0)
    with pytest.raises(ConfigError, match=r"train\.colour"):
        pipeline(project=project, overrides=["train.colour=red"], retry_delay_seconds=0)
    assert (project / "params.yaml").read_text() == before


def test_a_transient_failure_is_retried_and_a_permanent_one_is_not(
    first_run, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import pipeline
    from transferpilot import orchestrate as orchestrate

    real = orchestrate.repro_stage
    calls: list[str] = []
    # as if everything had changed: every stage goes through (patched) `dvc repro`
    monkeypatch.setattr(orchestrate, "stale_stages", lambda project_dir: set(STAGES))

    def flaky(project_dir: Path, stage: str, **kwargs: Any):
        calls.append(stage)
        if stage == "decide" and calls.count("decide") == 1:
            raise orchestrate.StageFailed(stage, 1, "simulated crash")
        return real(project_dir, stage, **kwargs)

    monkeypatch.setattr(orchestrate, "repro_stage", flaky)
    result = pipeline(project=project, retry_delay_seconds=0)
    assert calls.count("decide") == 2 and calls.count("evaluate") == 1
    assert list(result["stages"]) == STAGES

    calls.clear()

    def bad_data(project_dir: Path, stage: str, **kwargs: Any):
        calls.append(stage)
        if stage == "extract":
            raise orchestrate.StageFailed(stage, 3, "no usable images")
        return real(project_dir, stage, **kwargs)

    monkeypatch.setattr(orchestrate, "repro_stage", bad_data)
    with pytest.raises(orchestrate.StageFailed) as failed:
        pipeline(project=project, retry_delay_seconds=0)
    assert failed.value.exit_code == 3
    assert calls == ["prepare", "extract"]  # not retried, nothing after it ran


def test_a_failed_stage_says_why_first_and_logs_at_the_right_level() -> None:
    from transferpilot import orchestrate as orchestrate

    tail = "INFO prepare: reading\nerror: images: no usable images; see validation.txt\n" + (
        "ERROR: failed to reproduce 'prepare': exited with 3"
    )
    failed = orchestrate.StageFailed("prepare", 3, tail)
    assert str(failed).startswith("stage prepare failed: images: no usable images")
    assert orchestrate.line_level("INFO prepare: reading") == (20, "prepare: reading")
    assert orchestrate.line_level("WARNING low memory")[0] == 30
    assert orchestrate.line_level("ERROR: failed to reproduce 'prepare'")[0] == 40
    assert orchestrate.line_level("error: images: no usable images")[0] == 40
    assert orchestrate.line_level("Running stage 'prepare':") == (20, "Running stage 'prepare':")


def test_a_failed_prepare_publishes_its_validation_report(
    tmp_path: Path, project_root: Path, prefect_harness: None
) -> None:
    """One class only: prepare fails (exit 3, no retry) and says which files and why."""
    from flows.pipeline import pipeline

    bad = working_copy(tmp_path / "bad", project_root, classes={"red": 4})
    state = pipeline(project=bad, retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    assert "stage prepare failed" in state.message and "class" in state.message
    artifacts = artifacts_of(state.state_details.flow_run_id)
    report = artifacts["transferpilot-validation"].data
    assert "Data validation" in report and "red" in report
    assert task_states(state.state_details.flow_run_id)["prepare"] == "Failed"
    assert "dataset:tiny" in flow_run_of(state).tags  # tagged as it started
