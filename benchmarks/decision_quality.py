"""Benchmark: is the automatic choice right? Every strategy against the decision, per dataset.

    python -m benchmarks.decision_quality [DATASET_DIR ...] [--quick]
        [--finetune-epochs 3] [--finetune-size 128]

For each dataset (any ImageFolder or CSV manifest; default: every set in
``../shared/datasets``), on its validation split (test when it has one):

* logistic regression on the top layer (``pre_logits``, the CNN codes);
* a linear SVM on every candidate layer;
* "always fine-tune": the train stage's recipe with a fixed, stated budget —
  ``--finetune-epochs`` epochs at ``--finetune-size`` px (default: the
  decision's resolution, smaller than the model's for small images), the
  decision's frozen layers and learning-rate ratio;
* the automatic choice (``decide`` with the default rules; ``--budget-minutes``
  replaces the compute budget). When it fine-tunes, its own plan runs in full
  (its epochs, early stopping).

Fine-tuning is scored at its best epoch on the validation split that early
stopping watched (the shared sets have no test split): slightly optimistic,
against the linear strategies, which choose C by CV on the training split.

Regret = best accuracy - the automatic choice's accuracy, in points. Times are
wall seconds on this machine: extraction is measured cold (a fresh cache), the
automatic choice costs extraction + profile + its own training, "always
fine-tune" costs the fine-tuning run (its own passes over the images). Targets:
regret <= 1 point on each dataset; where auto does not fine-tune, it costs less
than half the time of always fine-tuning. Writes
``benchmarks/results/decision_quality.{json,md}`` (``--quick``: ``..._quick``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import SHARED, machine, print_table, write_results
from transferpilot.config import DecideParams, Params, TrainParams
from transferpilot.decide import choose_strategy
from transferpilot.errors import DataError
from transferpilot.features import extract_features, linear_inputs
from transferpilot.finetune import Finetuner
from transferpilot.intake import prepare_dataset
from transferpilot.profile import (
    measure_throughput,
    probe_options,
    profile_features,
    size_profile,
)
from transferpilot.stages.train import finetune_config
from transferpilot.strategies import create_strategy
from transferpilot.zoo import LOGITS, PRE_LOGITS, create_backbone

log = logging.getLogger("decision_quality")


def _fit(kind: str, layer: str, feats, y, train, test, params: TrainParams) -> dict[str, Any]:
    start = time.perf_counter()
    X = linear_inputs(layer, feats.arrays[layer])
    est = create_strategy(kind, params).fit(X[train], y[train])
    acc = float((est.predict(X[test]) == y[test]).mean())
    return {
        "strategy": kind,
        "layer": layer,
        "accuracy": acc,
        "seconds": time.perf_counter() - start,
    }


def _finetune(
    backbone: Any,
    records: list[Any],
    plan: Any,
    params: Params,
    epochs: int | None,
    size: int | None,
) -> dict[str, Any]:
    """Fine-tune as the train stage would for ``plan`` (``epochs``/``size`` fix the budget)."""
    ft_params = params.train.model_copy(update={"epochs": epochs, "input_size": size})
    config = finetune_config(ft_params, plan, backbone.model)
    tr = [r for r in records if r.split == "train"]
    va = [r for r in records if r.split == "val"]
    te = [r for r in records if r.split == "test"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        tuner = Finetuner(backbone, config, checkpoint_dir=Path(ckpt)).fit(
            [r.path for r in tr], [r.label for r in tr], [r.path for r in va], [r.label for r in va]
        )
        if te:
            truth = np.array([r.label for r in te])
            acc = float((tuner.predict([r.path for r in te]) == truth).mean())
        else:  # the best epoch's val accuracy: early stopping looked at val too
            acc = tuner.result_.best_val_accuracy
    result = tuner.result_
    return {
        "strategy": "finetune",
        "layer": f"{result.epochs_run} ep @ {tuner.data_config().input_size[1]}px",
        "accuracy": acc,
        "seconds": time.perf_counter() - start,
        "best_epoch": result.best_epoch,
    }


def run_dataset(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = Params()
    backbone = create_backbone(params.model.name)
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    if intake.fatal:
        raise DataError(f"{folder}: {intake.fatal}")
    records = intake.records
    has_test = any(r.split == "test" for r in records)
    eval_split = "test" if has_test else "val"
    y = np.array([r.label for r in records])
    train = np.array([r.split == "train" for r in records])
    test = np.array([r.split == eval_split for r in records])
    items = [(r.path, r.sha256) for r in records]

    with tempfile.TemporaryDirectory() as cold:  # extraction timed from an empty cache
        start = time.perf_counter()
        cache = Path(cold) if args.cold else params.extract.cache_dir
        feats = extract_features(backbone, items, cache_root=cache)
        extract_s = time.perf_counter() - start

    start = time.perf_counter()  # the profile as the pipeline runs it, throughput included
    size = size_profile(records)
    profile = profile_features(
        records,
        feats,
        backbone,
        probe=probe_options(params.profile, params.prepare.seed),
        throughput=measure_throughput(backbone, torch.device("cpu"), images=size),
        size=size,
    )
    profile_s = time.perf_counter() - start
    decide = params.decide
    if args.budget_minutes is not None:
        decide = decide.model_copy(update={"budget_minutes": args.budget_minutes})
    auto = choose_strategy(profile, decide)
    log.info("%s: auto %s on %s (%s)", folder.name, auto.strategy, auto.layer, auto.quadrant)

    tp = params.train.model_copy(update={"c_grid": tuple(args.c_grid), "cv_folds": args.cv_folds})
    runs = [_fit("linear", PRE_LOGITS, feats, y, train, test, tp)]
    layers = [ly.name for ly in backbone.layers] + [PRE_LOGITS, LOGITS]
    for layer in layers:
        runs.append(_fit("svm", layer, feats, y, train, test, tp))
        log.info("%s: svm %s %.3f", folder.name, layer, runs[-1]["accuracy"])

    plan = choose_strategy(profile, decide.model_copy(update={"strategy": "finetune"}))
    fixed = _finetune(backbone, records, plan, params, args.finetune_epochs, args.finetune_size)
    runs.append(fixed)
    ft_s = fixed["seconds"]

    if auto.strategy == "finetune":  # the decision's own plan: its epochs, early stopping
        auto_run = _finetune(backbone, records, auto, params, None, None)
        auto_run["strategy"] = "finetune (auto plan)"
        runs.append(auto_run)
    else:
        kind = "linear" if auto.strategy == "linear" else "svm"
        match = [r for r in runs if r["strategy"] == kind and r["layer"] == auto.layer]
        auto_run = match[0] if match else _fit(kind, auto.layer, feats, y, train, test, tp)
    best = max(runs, key=lambda r: r["accuracy"])
    auto_s = extract_s + profile_s + auto_run["seconds"]
    return {
        "dataset": folder.name,
        "evaluated_on": eval_split,
        "images": len(records),
        "quadrant": auto.quadrant,
        "similarity": profile.similarity.score,
        "median_per_class": profile.size.images_per_class["median"],
        "auto": {"strategy": auto.strategy, "layer": auto.layer, "accuracy": auto_run["accuracy"]},
        "best": best,
        "regret_points": 100 * (best["accuracy"] - auto_run["accuracy"]),
        "extract_seconds": extract_s,
        "profile_seconds": profile_s,
        "auto_seconds": auto_s,
        "finetune_seconds": ft_s,
        "auto_over_finetune_time": auto_s / ft_s,
        "runs": runs,
        "reason": auto.reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", type=Path, help="image folders (default: shared)")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 1 epoch at 64 px, 2 folds")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument(
        "--finetune-size", type=int, default=None, help="px (default: the decision's resolution)"
    )
    parser.add_argument("--budget-minutes", type=float, default=None, help="decide's budget")
    parser.add_argument("--warm", dest="cold", action="store_false", help="reuse the feature cache")
    args = parser.parse_args()
    args.c_grid, args.cv_folds = [0.001, 0.01, 0.1, 1.0], 3
    if args.quick:
        args.finetune_epochs, args.finetune_size, args.cv_folds = 1, 64, 2
        args.c_grid = [0.01, 0.1]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folders = args.datasets or sorted(p for p in SHARED.iterdir() if p.is_dir())
    results = [run_dataset(folder, args) for folder in folders]
    rows = []
    for r in results:
        times = ", ".join(f"{x['strategy']}:{x['layer']} {x['seconds']:.1f}s" for x in r["runs"])
        rows.append(
            [
                r["dataset"],
                r["quadrant"],
                f"{r['similarity']:.2f}",
                f"{r['auto']['strategy']} {r['auto']['layer']}",
                f"{r['auto']['accuracy']:.3f}",
                f"{r['best']['strategy']} {r['best']['layer']}",
                f"{r['best']['accuracy']:.3f}",
                f"{r['regret_points']:.1f}",
                f"{r['auto_seconds']:.0f}",
                f"{r['finetune_seconds']:.0f}",
                times,
            ]
        )
    m = machine()
    budget = f"{args.budget_minutes or DecideParams().budget_minutes:g} min"
    title = (
        f"Decision quality, efficientnet_lite0; always fine-tune = {args.finetune_epochs} epochs "
        f"at {f'{args.finetune_size} px' if args.finetune_size else 'the decision resolution'}; "
        f"decide's budget {budget} — {m['date']}, {m['cpu']}, {m['cores']} cores"
    )
    table = print_table(
        title,
        ["dataset", "quadrant", "sim", "auto", "auto acc", "best", "best acc", "regret pt",
         "auto s", "finetune s", "every strategy (wall s)"],
        rows,
    )  # fmt: skip
    name = "decision_quality_quick" if args.quick else "decision_quality"
    # paths as seen from the project folder (../shared/...): no machine's layout in the results
    root = Path(__file__).resolve().parents[1]
    settings = vars(args) | {"datasets": [os.path.relpath(f.resolve(), root) for f in folders]}
    write_results(name, {"machine": m, "args": settings, "results": results}, table)


if __name__ == "__main__":
    main()
