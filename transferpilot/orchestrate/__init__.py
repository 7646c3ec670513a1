"""Orchestration: running the DVC pipeline stage by stage, for the Prefect flow
(``flows/``, ``tasks/``) and ``transferpilot run``. One job per module:

- :mod:`.dvc` — the one adapter over DVC's Python API: the stage order from
  ``dvc.yaml`` (:func:`stage_order`), ``dvc status`` (:func:`stale_stages`), Hydra
  overrides, ``dvc exp save`` (:func:`save_experiment`);
- :mod:`.repro` — one stage as a ``dvc repro --single-item`` process, its output read
  line by line (:func:`repro_stage`, :func:`line_level`, :class:`StageFailed`);
- :mod:`.overrides` — a run's settings as DVC's ``-S`` overrides, checked, applied to
  ``params.yaml``, and the workspace put back after the run (:func:`apply_overrides`,
  :func:`restore_workspace`);
- :mod:`.naming` — the run's name and the project's commit;
- :mod:`.cluster` — ``--cluster`` (Dask through prefect-dask);
- :mod:`.outcome` — what a finished pipeline left, for the flow's artifacts;
- :mod:`.promote`, :mod:`.registry` — champion and challenger after a run: the frozen
  holdout, the comparison, drift, and the GTO registry of versions (``prod``);
- :mod:`.environment` — offline by default; nothing changes the environment at import:
  :func:`offline_environment` is called by the entry points (CLI, flow).

A run with overrides is what ``dvc exp run -S`` would have done, and
:func:`save_experiment` records it.

>>> for stage, upstream in stage_order(Path(".")):  # doctest: +SKIP
...     repro_stage(Path("."), stage, timeout_s=3600, on_line=print)
"""

from transferpilot.orchestrate.cluster import Cluster, parse_cluster
from transferpilot.orchestrate.dvc import save_experiment, stage_order, stale_stages
from transferpilot.orchestrate.environment import (
    OFFLINE,
    current_api_url,
    offline_environment,
)
from transferpilot.orchestrate.naming import code_version, dataset_name, run_name
from transferpilot.orchestrate.outcome import REPORT_FIGURE_PX, Outcome, outcome
from transferpilot.orchestrate.overrides import (
    apply_overrides,
    check_run,
    check_source,
    requested_overrides,
    restore_workspace,
    snapshot_workspace,
    to_overrides,
)
from transferpilot.orchestrate.promote import (
    Promotion,
    check_prepared,
    check_promotable,
    promote,
    registered_predictor,
    rollback,
)
from transferpilot.orchestrate.repro import (
    CHANGED,
    PERMANENT_EXIT_CODES,
    StageFailed,
    StageRun,
    line_level,
    repro_stage,
)

__all__ = [
    "CHANGED",
    "OFFLINE",
    "PERMANENT_EXIT_CODES",
    "REPORT_FIGURE_PX",
    "Cluster",
    "Outcome",
    "Promotion",
    "StageFailed",
    "StageRun",
    "apply_overrides",
    "check_prepared",
    "check_promotable",
    "check_run",
    "check_source",
    "code_version",
    "current_api_url",
    "dataset_name",
    "line_level",
    "offline_environment",
    "outcome",
    "parse_cluster",
    "promote",
    "registered_predictor",
    "repro_stage",
    "requested_overrides",
    "restore_workspace",
    "rollback",
    "run_name",
    "save_experiment",
    "snapshot_workspace",
    "stage_order",
    "stale_stages",
    "to_overrides",
]
