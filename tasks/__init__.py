"""Prefect tasks: one per DVC stage, plus the parameters and the artifacts around them.

Thin adapters over :mod:`transferpilot.orchestrate`: a stage task runs its DVC
stage (``dvc repro --single-item``) and streams its output into the task's
logs. DVC decides what is up to date, so no Prefect result caching is layered
on top (``NO_CACHE``). Failures retry, except those no retry can fix (exit
codes 2/3/4: bad configuration, data or model).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from transferpilot import orchestrate as pipeline

#: Default retries of a stage task, and the wait between tries.
STAGE_RETRIES = 2
RETRY_DELAY_S = 10.0


def _worth_retrying(task: Task, task_run: Any, state: Any) -> bool:
    """Retry unexpected failures and timeouts; not bad configuration, data or model."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, pipeline.StageFailed) and error.permanent)


@task(
    name="stage",
    cache_policy=NO_CACHE,
    retries=STAGE_RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=_worth_retrying,
)
def _run_stage(
    project: Path, stage: str, timeout_s: float | None = None, up_to_date: bool = False
) -> dict[str, Any]:
    logger = get_run_logger()
    if up_to_date:  # the flow's `dvc status` found nothing to do: no `dvc repro` process
        logger.info("stage %s is up to date (dvc status)", stage)
        return asdict(pipeline.StageRun(stage, "skipped", 0.0))
    result = pipeline.repro_stage(project, stage, timeout_s=timeout_s, on_line=logger.info)
    logger.info("stage %s %s in %.1f s", stage, result.status, result.seconds)
    return asdict(result)


def stage_task(
    stage: str, *, retries: int = STAGE_RETRIES, retry_delay_s: float = RETRY_DELAY_S
) -> Task:
    """The task for one DVC stage, named after it (as in the Prefect UI)."""
    return _run_stage.with_options(
        name=stage, task_run_name=stage, retries=retries, retry_delay_seconds=retry_delay_s
    )


@task(name="params", cache_policy=NO_CACHE)
def apply_params(project: Path, overrides: list[str]) -> dict[str, Any]:
    """Validate the overrides and write them into params.yaml (as ``dvc exp run -S``)."""
    params = pipeline.apply_overrides(project, overrides)
    if overrides:
        get_run_logger().info("params.yaml overrides: %s", " ".join(overrides))
    return params.model_dump(mode="json")


@task(name="experiment", cache_policy=NO_CACHE)
def save_experiment(project: Path, name: str | None) -> str | None:
    """Record the run as a DVC experiment (``dvc exp show`` lists it)."""
    saved = pipeline.save_experiment(project, name)
    get_run_logger().info("DVC experiment: %s", saved)
    return saved


@task(name="publish", cache_policy=NO_CACHE)
def publish(project: Path) -> dict[str, Any]:
    """Artifacts: the profile and decision (markdown), the metrics (table), the report."""
    result = pipeline.outcome(project)
    create_markdown_artifact(
        key="transferpilot-decision",
        markdown=result.summary_markdown,
        description="profile and decision, with its reason",
    )
    create_table_artifact(
        key="transferpilot-metrics",
        table=result.metric_rows(),
        description=f"evaluation metrics ({result.headline()})",
    )
    create_markdown_artifact(
        key="transferpilot-report",
        markdown=result.report_markdown
        + f"\n\nFigures: `{result.report_path}`; standalone page: `{result.report_html}`.\n",
        description="the run report",
    )
    return {
        "decision": result.decision,
        "metrics": result.metrics,
        "headline": result.headline(),
        "report": str(result.report_path.relative_to(project)),
        "report_html": str(result.report_html.relative_to(project)),
    }
