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

from benchmarks._common import SHARED, machine, print_table, stamp, write_results
from transferpilot.config import DecideParams, Params
from transferpilot.decide import Decision, choose_strategy
from transferpilot.errors import DataError
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import prepare_dataset
from transferpilot.profile.build import build_profile
from transferpilot.strategies import get_strategy
from transferpilot.zoo import LOGITS, PRE_LOGITS, Backbone, create_backbone

log = logging.getLogger("decision_quality")


def _score(
    backbone: Backbone, plan: Decision, table: FeatureTable, split: np.ndarray, eval_split: str
) -> dict[str, Any]:
    """Train ``plan`` through the strategy protocol as the train stage does; score it."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        strategy = get_strategy(plan.strategy)(backbone, plan, checkpoint_dir=Path(ckpt))
        strategy.fit(table, split == "train", split == "val")
    rows = np.flatnonzero(split == eval_split)
    predicted = np.asarray(strategy.classes_)[strategy.predict_proba(table, rows).argmax(1)]
    layer = plan.layer
    if plan.strategy == "finetune":
        layer = f"{strategy.summary_['epochs_run']} ep @ {strategy.summary_['input_size']}px"
    return {
        "strategy": plan.strategy,
        "layer": layer,
        "accuracy": float((predicted == table.labels[rows]).mean()),
        "seconds": time.perf_counter() - start,
    }


def run_dataset(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = Params()
    backbone = create_backbone(params.model.name)
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    if intake.fatal:
        raise DataError(f"{folder}: {intake.fatal}")
    records = intake.records
    eval_split = "test" if any(r.split == "test" for r in records) else "val"
    with tempfile.TemporaryDirectory() as tmp:
        extract = params.extract
        if args.cold:  # extraction timed from an empty cache
            extract = extract.model_copy(update={"cache_dir": Path(tmp) / "cache"})
        start = time.perf_counter()
        (Path(tmp) / "table").mkdir()
        meta, _ = write_table(backbone, records, Path(tmp) / "table", extract)
        table = FeatureTable(records, meta, Path(tmp) / "table")
        extract_s = time.perf_counter() - start

        start = time.perf_counter()  # the profile as the pipeline builds it
        profile = build_profile(table, backbone, params.profile, extract)
        profile_s = time.perf_counter() - start
        decide = params.decide
        if args.budget_minutes is not None:
            decide = decide.model_copy(update={"budget_minutes": args.budget_minutes})
        linear_train = params.train.model_copy(
            update={"c_grid": tuple(args.c_grid), "cv_folds": args.cv_folds}
        )
        auto = choose_strategy(profile, decide, linear_train)
        log.info("%s: auto %s on %s (%s)", folder.name, auto.strategy, auto.layer, auto.quadrant)

        def forced(strategy: str, layer: str | None = None, **train: Any) -> Decision:
            rules = decide.model_copy(update={"strategy": strategy, "layer": layer})
            return choose_strategy(profile, rules, linear_train.model_copy(update=train))

        split = table.split
        runs = [_score(backbone, forced("linear", PRE_LOGITS), table, split, eval_split)]
        for layer in [*meta.layer_names, PRE_LOGITS, LOGITS]:
            runs.append(_score(backbone, forced("svm", layer), table, split, eval_split))
            log.info("%s: svm %s %.3f", folder.name, layer, runs[-1]["accuracy"])
        fixed = forced("finetune", epochs=args.finetune_epochs, input_size=args.finetune_size)
        runs.append(_score(backbone, fixed, table, split, eval_split))
        ft_s = runs[-1]["seconds"]
        same = [r for r in runs if (r["strategy"], r["layer"]) == (auto.strategy, auto.layer)]
        if auto.strategy == "finetune" or not same:  # the decision's own plan, run in full
            auto_run = _score(backbone, auto, table, split, eval_split)
            auto_run["strategy"] += " (auto plan)"
            runs.append(auto_run)
        else:
            auto_run = same[0]
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
        f"decide's budget {budget} — {stamp(m)}, {m['cpu']}, {m['cores']} cores"
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
