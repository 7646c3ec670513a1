"""Stage ``train``: carry out the plan in ``data/decision/decision.json``, into ``models/train/``.

The decided strategy (see :mod:`transferpilot.strategies`) is fitted on the
training rows of the feature table and saved in the folder: ``head.joblib``
(+ its checked sidecar) for ``linear``/``svm`` on the decided layer's cached
features; ``model.safetensors`` + ``model.json`` and ``curves.tsv`` for
``finetune``, whose resumable checkpoints live in ``models/checkpoints/``
(outside DVC's outputs, so a killed run resumes where it stopped). Its
settings are the decision's plan (``train`` section, completed by ``decide``).

Unless ``train.export`` is off, the result is also exported as one
self-contained ONNX predictor, ``predictor.onnx`` (see :mod:`transferpilot.export`).
Always writes ``train.json``: strategy, layer, validation accuracy — no timings,
so the same run gives the same bytes.

Fine-tuning on more than one process (``train.nproc_per_node``, ``train.nnodes``)
is launched through torchrun: every rank runs this stage again, trains its share,
and rank 0 alone writes (:mod:`transferpilot.finetune._distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import ModelParams
from transferpilot.decide import Decision, load_decision
from transferpilot.device import resolve_device
from transferpilot.export import export_onnx
from transferpilot.features import FeatureTable
from transferpilot.finetune import _distributed as distributed
from transferpilot.io import read_json, write_json
from transferpilot.label_issues import LabelIssues, find_label_issues, head_layer, probe_issues
from transferpilot.stages import Paths, chosen_model, register_stage
from transferpilot.strategies import Context, get_strategy
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


@register_stage("train", sections=("model",))
def run(model: ModelParams, paths: Paths) -> dict[str, Any]:
    model = chosen_model(model, paths)
    decision = load_decision(paths.decision_json.path)
    several = get_strategy(decision.strategy).distributed and distributed.requested(decision.train)
    if several and not distributed.inside():  # this process launches; rank 0 writes
        distributed.launch(decision.train, ["stage", "train"])
        return paths.train_json.read_json()
    device = resolve_device(decision.train.device)
    group = distributed.process_group(device) if several else contextlib.nullcontext(device)
    with group as device:
        return _train(model, decision, paths, device)


def _train(model: ModelParams, decision: Any, paths: Paths, device: Any) -> dict[str, Any]:
    table = FeatureTable.open(paths.features, paths.manifest)
    split = table.split
    out = paths.models
    main = distributed.is_main()
    if main:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    start = time.perf_counter()
    backbone = create_backbone(model.name, arch=model.arch)
    strategy = get_strategy(decision.strategy)(
        backbone, decision, Context(device=device, checkpoint_dir=paths.checkpoints)
    )
    strategy.fit(table, split == "train", split == "val")
    if not main:
        return {}
    issues = _label_issues(strategy, decision, table) if decision.train.label_issues else None
    cleaned: dict[str, Any] = {}
    if issues is not None and issues.count and decision.train.drop_label_issues:
        strategy, cleaned = _without(issues, strategy, decision, table, backbone, paths, device)
    strategy.save(out)
    if issues is not None:
        write_json(paths.label_issues.path, issues.to_dict())
        log.info("train: %s", issues.words())
        for warning in issues.warnings:
            log.warning("label issues: %s", warning)
    if decision.train.export:
        export_start = time.perf_counter()
        module, data_config = strategy.predictor()
        export_onnx(
            module,
            paths.predictor,
            {
                "classes": strategy.classes_,
                "data_config": data_config.as_dict(),
                "model": model.name,
                "strategy": decision.strategy,
                "layer": decision.layer,
            },
        )
        log.info(
            "train: exported %s in %.1f s", paths.predictor, time.perf_counter() - export_start
        )
    summary = {
        "model": model.name,
        "strategy": decision.strategy,
        "layer": decision.layer,
        **strategy.summary_,
        **({} if issues is None else {"label_issues": issues.count}),
        **cleaned,
    }
    write_json(paths.train_json.path, summary)
    log.info(
        "train: %s on %s, val accuracy %.3f (%.1f s)",
        decision.strategy,
        decision.layer,
        summary["val_accuracy"],
        time.perf_counter() - start,
    )
    return summary


def _label_issues(strategy: Any, decision: Any, table: FeatureTable) -> LabelIssues:
    """The training images that look mislabelled, by the chosen head's out-of-fold
    probabilities or, for a strategy without them, those of softmax regression on the
    layer whose head scored best in the decision."""
    proba = strategy.out_of_fold_proba()
    if proba is None:
        return probe_issues(table, head_layer(decision.candidates), decision.train)
    train = np.flatnonzero(table.split == "train")
    records = [table.records[i] for i in train]
    return find_label_issues(
        [str(r.path) for r in records],
        [r.label for r in records],
        proba,
        strategy.classes_,
        source=f"the chosen head ({decision.strategy} on {decision.layer})",
    )


def _without(
    issues: LabelIssues,
    strategy: Any,
    decision: Any,
    table: FeatureTable,
    backbone: Any,
    paths: Paths,
    device: Any,
) -> tuple[Any, dict[str, Any]]:
    """The strategy trained again on the training images less those flagged, and what that
    changed (``train.drop_label_issues``)."""
    flagged = issues.droppable()
    if not flagged:
        return strategy, {"label_issues_dropped": 0}
    split = table.split
    keep = (split == "train") & np.array([str(r.path) not in flagged for r in table.records])
    log.info(
        "train: again without the %d flagged training images",
        int((split == "train").sum() - keep.sum()),
    )
    again = get_strategy(decision.strategy)(
        backbone, decision, Context(device=device, checkpoint_dir=paths.checkpoints / "cleaned")
    )
    again.fit(table, keep, split == "val")
    before, after = strategy.summary_.get("val_accuracy"), again.summary_.get("val_accuracy")
    log.info("train: val accuracy %s with the flagged images, %s without", before, after)
    return again, {
        "label_issues_dropped": len(flagged),
        "val_accuracy_with_label_issues": before,
    }


def trained_strategy(directory: Path, arch: str | None = None, device: Any = None) -> Any:
    """The strategy this stage saved in ``directory`` (``train.json`` names it, its
    layer and backbone), loaded with that backbone: what ``predict --explain`` maps."""
    summary = read_json(directory / "train.json", produced_by="train")
    decision = Decision(
        quadrant="", size="", domain="", reason="",
        strategy=summary["strategy"], layer=summary["layer"],
    )  # fmt: skip
    backbone = create_backbone(summary["model"], arch=arch)
    return get_strategy(decision.strategy).load(directory, backbone, decision, Context(device))
