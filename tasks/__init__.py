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
from prefect.states import Completed

from transferpilot import orchestrate

#: Default retries of a stage task, and the wait between tries.
STAGE_RETRIES = 2
RETRY_DELAY_S = 10.0


def _worth_retrying(task: Task, task_run: Any, state: Any) -> bool:
    """Retry unexpected failures and timeouts; not bad configuration, data or model."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, orchestrate.StageFailed) and error.permanent)


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
        return _finished(orchestrate.StageRun(stage, "skipped", 0.0))

    def log_line(line: str) -> None:
        level, text = orchestrate.line_level(line)
        logger.log(level, "%s", text)

    result = orchestrate.repro_stage(project, stage, timeout_s=timeout_s, on_line=log_line)
    logger.info("stage %s %s in %.1f s", stage, result.status, result.seconds)
    return _finished(result)


def _finished(result: Any) -> Any:
    """A stage's final state: Completed when it ran, a Completed state named "Skipped"
    when DVC had nothing to do (up to date, or restored from its run cache)."""
    if result.status == "ran":
        return asdict(result)
    why = "up to date" if result.status == "skipped" else "restored from DVC's run cache"
    return Completed(name="Skipped", message=f"{result.stage}: {why}", data=asdict(result))


def stage_task(
    stage: str, *, retries: int = STAGE_RETRIES, retry_delay_s: float = RETRY_DELAY_S
) -> Task:
    """The task for one DVC stage, named after it (as in the Prefect UI)."""
    return _run_stage.with_options(
        name=stage, task_run_name=stage, retries=retries, retry_delay_seconds=retry_delay_s
    )


@task(
    name="extract shard",
    task_run_name="extract shard {shard}",
    cache_policy=NO_CACHE,
    retries=STAGE_RETRIES,
    retry_delay_seconds=2,
)
def extract_shard(
    project: Path,
    items: list[tuple[str, str]],
    shard: str,
    threads: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """One shard of the manifest into the feature cache, on the worker the task runner
    picks (a Dask worker under ``--cluster``), with backbone ``model`` (default
    ``model.name``). A retry computes only what is missing."""
    from transferpilot.stages.extract import fill_shard

    done = fill_shard(project, items, shard, threads, model)
    get_run_logger().info(
        "shard %s: %d images, %d computed in %.1f s",
        shard,
        done["images"],
        done["computed"],
        done["seconds"],
    )
    return done


@task(name="params", task_run_name="params", cache_policy=NO_CACHE)
def apply_params(project: Path, overrides: list[str]) -> dict[str, Any]:
    """Validate the overrides and write them into params.yaml (as ``dvc exp run -S``)."""
    params = orchestrate.apply_overrides(project, overrides)
    if overrides:
        get_run_logger().info("params.yaml overrides: %s", " ".join(overrides))
    return params.model_dump(mode="json")


@task(name="experiment", task_run_name="experiment", cache_policy=NO_CACHE)
def save_experiment(project: Path, name: str | None) -> str | None:
    """Record the run as a DVC experiment (``dvc exp show`` lists it)."""
    saved = orchestrate.save_experiment(project, name)
    get_run_logger().info("DVC experiment: %s", saved)
    return saved


@task(name="publish", task_run_name="publish", cache_policy=NO_CACHE)
def publish(project: Path) -> dict[str, Any]:
    """Artifacts: the profile and decision (markdown), the metrics (table), the report."""
    result = orchestrate.outcome(project)
    headline = result.headline()
    decided = f"{result.decision['strategy']} on {result.decision['layer']}"
    create_markdown_artifact(
        key="transferpilot-decision",
        markdown=result.summary_markdown,
        description=f"decision: {decided} ({result.decision['quadrant']}); {headline}",
    )
    create_table_artifact(
        key="transferpilot-metrics",
        table=result.metric_rows(),
        description=f"evaluation metrics: {headline}",
    )
    create_markdown_artifact(
        key="transferpilot-report",
        markdown=result.report_markdown,
        description=f"the run report: {decided}, {headline}",
    )
    return {
        "decision": result.decision,
        "metrics": result.metrics,
        "headline": result.headline(),
        "report": str(result.report_path.relative_to(project)),
        "report_html": str(result.report_html.relative_to(project)),
    }


@task(name="validation report", task_run_name="validation report", cache_policy=NO_CACHE)
def publish_validation(project: Path) -> bool:
    """The ``prepare`` stage's validation report as an artifact (after it failed)."""
    from transferpilot.stages import Paths

    report = Paths(project).prepared / "validation.txt"
    if not report.is_file():
        return False
    create_markdown_artifact(
        key="transferpilot-validation",
        markdown=f"# Data validation\n\n```\n{report.read_text(encoding='utf-8')}\n```\n",
        description="the prepare stage's findings: files skipped or converted, and why",
    )
    return True


def label_run(
    dataset: str, decision: dict[str, Any] | None = None, experiment: str | None = None
) -> None:
    """Name the flow run after its dataset and decision, and tag it (dataset, strategy,
    experiment), so the runs list tells runs apart; called as the run starts (the dataset
    only: a failed run is tagged too) and when it ends. Best effort: never fails the run."""
    from prefect import get_client
    from prefect.runtime import flow_run

    logger = get_run_logger()
    run_id = flow_run.id
    if not run_id:
        return
    tags = [f"dataset:{dataset}"]
    if decision:
        tags.append(f"strategy:{decision['strategy']}")
    if experiment:
        tags.append(f"experiment:{experiment}")
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run_id)
            client.update_flow_run(
                run_id,
                name=orchestrate.run_name(dataset, str(run_id), decision),
                tags=sorted({*(current.tags or []), *tags}),
            )
    except Exception as err:  # the API unreachable: the run itself succeeded
        logger.warning("could not name and tag the flow run: %s", err)


@task(name="promote", task_run_name="promote", cache_policy=NO_CACHE)
def promote_run(project: Path, force: bool = False) -> dict[str, Any]:
    """Champion and challenger: register this run (GTO), put it in service if it is not
    worse than the champion on the frozen evaluation images, check the new images for
    drift; the verdict as an artifact."""
    from prefect.runtime import flow_run

    from transferpilot.orchestrate.promote import promote

    done = promote(project, force=force, run=str(flow_run.id) if flow_run.id else None)
    create_markdown_artifact(
        key="transferpilot-promotion", markdown=done.markdown(), description=done.message()
    )
    get_run_logger().info("%s", done.message())
    return done.as_dict()
