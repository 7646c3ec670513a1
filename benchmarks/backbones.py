"""Benchmark: does ``model.name: auto`` pick the right backbone, and what does picking cost?

    python -m benchmarks.backbones [DATASET_DIR ...] [--finetune-epochs 1] [--bootstrap 1000]

For each dataset (default: every set in ``../shared/datasets``):

* **selection**, as the extract stage runs it (:func:`~transferpilot.profile.select.
  rank_backbones`), timed from an empty feature cache and an empty probe cache: each
  candidate's features of the stratified sample (``model.select_images``), a linear
  probe on every layer, k-NN and LogME on the best one, the pick;
* **every candidate's own run**, as the pipeline runs it with that backbone: the full
  feature table, the profile, ``decide`` with the same rules (default budget), the
  decided plan trained as the train stage trains it, scored **once** on the evaluation
  split (test, else val), which the selection never saw.

Regret = best backbone's accuracy - the pick's, in points, with a paired bootstrap 95 %
interval over the evaluation images (each resample re-takes the best); also the pick
against the default Lite0. Kendall's tau between each selection score (probe, k-NN,
LogME) and the final accuracy, per dataset. Selection cost: its wall time (the first
throughput measurement of a backbone on this machine included, when it was not kept
yet); "net" subtracts the chosen backbone's sample extraction, which the run then finds
in its cache; the share is of the whole auto run (net selection + the chosen backbone's
run: cold extraction at the rate measured on the sample, profile, training).
Fine-tuning plans are capped at ``--finetune-epochs`` (CPU time: 3 backbones x 3 large
sets). Writes ``benchmarks/results/backbones.{json,md}``.
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
from benchmarks.decision_quality import _fit, bootstrap_regret, key
from transferpilot.config import ModelParams, Params
from transferpilot.decide import choose_strategy
from transferpilot.errors import DataError
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import prepare_dataset
from transferpilot.profile.build import build_profile
from transferpilot.profile.select import rank_backbones
from transferpilot.zoo import create_backbone

log = logging.getLogger("backbones")

DEFAULT = "efficientnet_lite0"
SCORES = ("probe_accuracy", "knn_accuracy", "logme")


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of ``x`` against ``y``; ``None`` when either is constant."""
    from scipy.stats import kendalltau

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(kendalltau(x, y).statistic)


def run_dataset(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = Params()
    model = ModelParams(name="auto")
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    if intake.fatal:
        raise DataError(f"{folder}: {intake.fatal}")
    records = intake.records
    eval_split = "test" if any(r.split == "test" for r in records) else "val"
    decide = params.decide.model_copy(update={"finetune_epochs": args.finetune_epochs})
    train = params.train.model_copy(update={"c_grid": tuple(args.c_grid), "cv_folds": args.folds})

    with tempfile.TemporaryDirectory() as tmp:  # selection from empty caches
        extract = params.extract.model_copy(update={"cache_dir": Path(tmp) / "features"})
        probes = params.profile.model_copy(update={"cache_dir": Path(tmp) / "probes"})
        start = time.perf_counter()
        ranking = rank_backbones(records, model, extract, probes, decide)
        select_s = time.perf_counter() - start

    runs: dict[str, dict[str, Any]] = {}
    for name in model.candidates:
        backbone = create_backbone(name)
        score = ranking.score(name)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            meta, _ = write_table(backbone, records, Path(tmp), params.extract)
            table = FeatureTable(records, meta, Path(tmp))
            warm_extract_s = time.perf_counter() - start
            start = time.perf_counter()
            profile = build_profile(table, backbone, params.profile, params.extract)
            profile_s = time.perf_counter() - start
            plan = choose_strategy(profile, decide, train)
            run = _fit(backbone, plan, table, eval_split)
        extract_s = len(records) / score.images_per_s if score.images_per_s else warm_extract_s
        runs[name] = {
            "plan": key(plan.strategy, plan.layer),
            "detail": run["detail"],
            "accuracy": float(run["correct"].mean()),
            "correct": run["correct"],
            "extract_seconds": extract_s,
            "profile_seconds": profile_s,
            "train_seconds": run["seconds"],
            "run_seconds": extract_s + profile_s + run["seconds"],
            **{s: getattr(score, s) for s in SCORES},
            "layer": score.layer,
        }
        log.info(
            "%s %s: %s %.3f (probe %.3f, %.0f s)",
            folder.name,
            name,
            runs[name]["plan"],
            runs[name]["accuracy"],
            score.probe_accuracy,
            runs[name]["run_seconds"],
        )
    pick = ranking.chosen
    correct = {n: r["correct"] for n, r in runs.items()}
    best = max(runs, key=lambda n: runs[n]["accuracy"])
    low, high = bootstrap_regret(correct, pick, args.bootstrap)
    chosen = ranking.score(pick)
    reused = ranking.sample_images / chosen.images_per_s if chosen.images_per_s else 0.0
    net = max(0.0, select_s - reused)
    accuracies = [runs[n]["accuracy"] for n in model.candidates]
    return {
        "dataset": folder.name,
        "images": len(records),
        "evaluated_on": eval_split,
        "eval_images": len(correct[pick]),
        "sample_images": ranking.sample_images,
        "pick": pick,
        "reason": ranking.reason,
        "best": best,
        "regret_points": 100 * (runs[best]["accuracy"] - runs[pick]["accuracy"]),
        "regret_95": [low, high],
        "vs_default_points": 100 * (runs[pick]["accuracy"] - runs[DEFAULT]["accuracy"]),
        "kendall_tau": {
            s: kendall_tau([runs[n][s] for n in model.candidates], accuracies) for s in SCORES
        },
        "selection_seconds": select_s,
        "selection_net_seconds": net,
        "selection_share": net / (net + runs[pick]["run_seconds"]),
        "ranking": ranking.to_dict(),
        "runs": {
            n: {f: v for f, v in r.items() if f != "correct"}
            | {"correct": "".join(map(str, r["correct"].tolist()))}
            for n, r in runs.items()
        },
    }


def _tau(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", type=Path, help="image folders (default: shared)")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="decide.finetune_epochs")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    args.c_grid, args.folds = [0.001, 0.01, 0.1, 1.0], 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folders = args.datasets or sorted(p for p in SHARED.iterdir() if p.is_dir())
    m = machine()  # the commit measured is the one the run started at
    results = [run_dataset(folder, args) for folder in folders]
    candidates = ModelParams().candidates
    short = {n: n.replace("efficientnet_", "") for n in candidates}
    rows = []
    for r in results:
        runs, (lo, hi) = r["runs"], r["regret_95"]
        rows.append(
            [
                r["dataset"],
                str(r["eval_images"]),
                *(f"{runs[n]['accuracy']:.3f} {runs[n]['plan']}" for n in candidates),
                " / ".join(f"{runs[n]['probe_accuracy']:.3f}" for n in candidates),
                short[r["pick"]],
                f"{r['regret_points']:.1f} [{lo:.1f}, {hi:.1f}]",
                f"{r['vs_default_points']:+.1f}",
                " / ".join(_tau(r["kendall_tau"][s]) for s in SCORES),
                f"{r['sample_images']}",
                f"{r['selection_seconds']:.0f} ({r['selection_net_seconds']:.0f})",
                f"{100 * r['selection_share']:.0f} %",
            ]
        )
    title = (
        f"Backbone choice (model.name auto over {', '.join(short.values())}): each backbone's "
        f"pipeline run scored once on val; fine-tuning plans capped at {args.finetune_epochs} "
        f"epoch(s); default budget — {stamp(m)}, {m['cpu']}, {m['cores']} cores"
    )
    header = [
        "dataset", "eval n", *(f"{short[n]} acc, plan" for n in candidates),
        "probe " + "/".join(short.values()), "pick", "regret pt [95% CI]", "vs lite0 pt",
        "tau probe/kNN/LogME", "sample", "selection s (net)", "share of run",
    ]  # fmt: skip
    table = print_table(title, header, rows)
    taus = {
        s: [r["kendall_tau"][s] for r in results if r["kendall_tau"][s] is not None] for s in SCORES
    }
    summary = {
        "regret_at_most_half_point": sum(r["regret_points"] <= 0.5 for r in results),
        "worse_than_lite0_by_more_than_half_point": sum(
            r["vs_default_points"] < -0.5 for r in results
        ),
        "mean_kendall_tau": {s: float(np.mean(v)) if v else None for s, v in taus.items()},
        "max_selection_share": max(r["selection_share"] for r in results),
    }
    text = (
        table
        + f"\n\nRegret ≤ 0.5 point on {summary['regret_at_most_half_point']} of {len(results)} "
        f"sets; worse than Lite0 by more than 0.5 point on "
        f"{summary['worse_than_lite0_by_more_than_half_point']}. Mean Kendall tau (score vs "
        f"final accuracy, per set): "
        + ", ".join(f"{s} {_tau(v)}" for s, v in summary["mean_kendall_tau"].items())
        + "."
    )
    print(text.split("\n\n")[-1])
    root = Path(__file__).resolve().parents[1]
    settings = vars(args) | {"datasets": [os.path.relpath(f.resolve(), root) for f in folders]}
    write_results(
        "backbones", {"machine": m, "args": settings, "summary": summary, "results": results}, text
    )


if __name__ == "__main__":
    main()
