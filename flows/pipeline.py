"""The transferpilot flow: the DVC pipeline as Prefect tasks, with retries and artifacts.

Stages run in the order DVC's own graph gives (read from ``dvc.yaml`` each
run, never a second hand-written list), each as its own task that runs
``dvc repro --single-item STAGE``; an up-to-date stage finishes at once as
skipped. Overrides (``data``, ``model``, ``strategy``, free ``params`` and raw
``overrides`` such as ``"train.epochs=3"``) are validated before anything
runs and reach DVC as ``-S`` overrides of ``params.yaml``; a run with
overrides is then recorded as a DVC experiment (``dvc exp show``). Finally
the profile, decision, metrics and report are published as artifacts.

    transferpilot run --data path/to/images -S train.epochs=3
    transferpilot serve --cron "0 2 * * *"
    prefect deploy --all   # prefect.yaml: a process work pool, nightly
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter
# model from these annotations, and must see the objects, not strings.
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, unmapped
from prefect.states import Completed

from tasks import (
    apply_params,
    extract_shard,
    label_run,
    promote_run,
    publish,
    publish_validation,
    save_experiment,
    stage_task,
)
from transferpilot import orchestrate
from transferpilot.errors import ConfigError

Strategy = Literal["auto", "linear", "svm", "finetune", "baseline"]
PROJECT = Path(__file__).resolve().parents[1]


def _name() -> str:
    """The run's name as it starts (the decision is added when known): ``digits-1a2b3c4d``."""
    from prefect.runtime import flow_run

    given = flow_run.parameters or {}
    project = Path(given.get("project") or ".").resolve()
    return orchestrate.run_name(
        orchestrate.dataset_name(project, given.get("data")), str(flow_run.id or "")
    )


@flow(
    name="transferpilot",
    validate_parameters=True,
    flow_run_name=_name,
    version=orchestrate.code_version(PROJECT),  # the commit, not a hash of this file
)
def pipeline(
    project: Path = Path("."),
    data: Path | None = None,
    model: str | None = None,
    strategy: Strategy | None = None,
    params: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    cluster: str | None = None,
    promote: bool = False,
    stage_timeout_minutes: float = 240.0,
    retries: int = 2,
    retry_delay_seconds: float = 10.0,
) -> Any:
    """Run prepare → extract → profile → decide → train → evaluate (as dvc.yaml says).

    Args:
        project: the project folder (dvc.yaml, params.yaml).
        data: the image folder or CSV manifest to use (``prepare.source``).
        model: the backbone (``model.name``), e.g. ``timm:resnet50.a1_in1k``.
        strategy: force ``linear`` / ``svm`` / ``finetune`` (``decide.strategy``).
        params: more settings by dotted key, e.g. ``{"train.epochs": 3}``.
        overrides: DVC ``-S`` overrides as strings, e.g. ``["train.lr=0.0005"]``.
        experiment: the DVC experiment's name (runs with overrides are recorded).
        cluster: ``local:N`` or ``tcp://HOST:PORT``: the images to extract are first
            computed into the feature cache as shards mapped over this Dask cluster.
        promote: the run is a challenger: registered (GTO), put in service only if not
            worse than the champion; the run ends ``Promoted``, ``ChampionKept`` or
            ``DriftDetected`` (a Completed state of that name).
        stage_timeout_minutes: a stage running longer is killed (and retried).
        retries: retries of a failed stage (not for bad configuration, data or model).
        retry_delay_seconds: the wait before a retry.
    """
    logger = get_run_logger()
    project = Path(project).resolve()
    if not (project / "dvc.yaml").is_file():
        raise ConfigError(f"{project}: no dvc.yaml here; run from the transferpilot project folder")
    requested = orchestrate.requested_overrides(project, data, model, strategy, params, overrides)
    dask = orchestrate.parse_cluster(cluster)
    if promote:
        orchestrate.check_promotable(project, requested)
    label_run(orchestrate.dataset_name(project, data))  # tagged from the start, failed runs too
    # An override run is an experiment: the workspace is put back after it (in Git, where
    # `dvc exp save` keeps the run; elsewhere it stays, consistent, as `dvc exp run -S`).
    kept = requested and (project / ".git").exists()
    saved = orchestrate.snapshot_workspace(project) if kept else None
    apply_params(project, requested)
    restored = False
    try:
        result = _run_stages(
            project,
            requested,
            experiment,
            dask,
            stage_timeout_minutes,
            retries,
            retry_delay_seconds,
            promote,
        )
    finally:
        if saved is not None and orchestrate.restore_workspace(project, saved):
            restored = True
            logger.info(
                "workspace put back (params.yaml, dvc.lock and the outputs, as `dvc exp run "
                "--temp` leaves it): this run lives on in its DVC experiment "
                "(`dvc exp apply <name>` brings it into the workspace)"
            )
    result = {**result, "workspace_restored": restored}
    if not promote:
        return result
    promotion = promote_run(project)
    logger.info("%s", promotion["message"])
    return Completed(
        name=promotion["state"],
        message=promotion["message"],
        data={**result, "promotion": promotion},
    )


def _run_stages(
    project: Path,
    requested: list[str],
    experiment: str | None,
    cluster: orchestrate.Cluster | None,
    stage_timeout_minutes: float,
    retries: int,
    retry_delay_seconds: float,
    promote: bool = False,
) -> dict[str, Any]:
    logger = get_run_logger()
    runs: dict[str, Any] = {}
    futures: dict[str, Any] = {}
    stale = orchestrate.stale_stages(project)
    for stage, upstream in orchestrate.stage_order(project):
        task = stage_task(stage, retries=retries, retry_delay_s=retry_delay_seconds)
        # up to date: not stale, and nothing upstream ran (else DVC decides)
        ran_upstream = any(runs.get(u, {}).get("status") in orchestrate.CHANGED for u in upstream)
        current = stage not in stale and not ran_upstream
        if stage == "extract" and cluster and not current:
            # fill the feature cache on the cluster; the DVC stage then only assembles
            runner = cluster.task_runner()
            extract_on_cluster.with_options(task_runner=runner)(project, cluster.spec)
        futures[stage] = task.submit(
            project,
            stage,
            stage_timeout_minutes * 60,
            up_to_date=current,
            wait_for=[futures[u] for u in upstream if u in futures],
        )
        try:
            runs[stage] = futures[stage].result()  # stages share DVC's lock: one at a time
        except orchestrate.StageFailed:
            if stage == "prepare":  # say which files were unusable, and why
                publish_validation(project)
            raise
        if stage == "prepare" and promote:  # no test split, or new classes: say so now
            orchestrate.check_prepared(project)
    saved = save_experiment(project, experiment) if requested or experiment else None
    result = publish(project)
    label_run(orchestrate.dataset_name(project), result["decision"], saved)
    ran = [s for s, r in runs.items() if r["status"] in orchestrate.CHANGED]
    logger.info("stages run: %s; up to date: %d", ", ".join(ran) or "none", len(runs) - len(ran))
    logger.info("%s — report: %s", result["headline"], result["report"])
    return {"stages": runs, "experiment": saved, **result}


@flow(name="extract on dask", flow_run_name="extract on {cluster}", validate_parameters=True)
def extract_on_cluster(project: Path, cluster: str) -> dict[str, Any]:
    """The images the feature cache lacks, computed as shards (by image hash) mapped over
    the Dask cluster the task runner was given: each shard a task, retried on its own."""
    from transferpilot.stages.extract import plan_shards

    logger = get_run_logger()
    spec = orchestrate.parse_cluster(cluster)
    model, shards = plan_shards(project, spec.shards)
    if not shards:
        logger.info("every image is in the feature cache: nothing for the cluster to do")
        return {"shards": 0, "computed": 0}
    names = [f"{i + 1:0{len(str(len(shards)))}d}-of-{len(shards)}" for i in range(len(shards))]
    logger.info(
        "%d images to extract in %d shards on Dask (%s, %s model threads per worker)",
        sum(map(len, shards)),
        len(shards),
        cluster,
        spec.threads or "all",
    )
    futures = extract_shard.map(
        unmapped(project), shards, names, unmapped(spec.threads), unmapped(model)
    )
    done = [f.result() for f in futures]
    computed = sum(d["computed"] for d in done)
    logger.info("cluster extraction: %d images computed in %d shards", computed, len(done))
    seconds = [d["seconds"] for d in done]
    return {"shards": len(done), "computed": computed, "shard_seconds": seconds}


if __name__ == "__main__":
    orchestrate.offline_environment()
    pipeline()
