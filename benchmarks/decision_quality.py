"""Benchmark: is the automatic choice right? Every candidate decide weighs, against its pick.

    python -m benchmarks.decision_quality [DATASET_DIR ...] [--quick]
        [--finetune-epochs 3] [--bootstrap 1000]

For each dataset (any ImageFolder or CSV manifest; default: every set in
``../shared/datasets``):

* the profile is built as the pipeline builds it, and ``decide`` (no budget)
  lists its candidates: softmax regression and the linear SVM on the probed
  layers, the no-transfer baseline (softmax regression and an RBF-kernel SVM on
  the raw pixels) and the fine-tuning plan;
* **every** candidate is trained as the train stage trains it (the strategy
  protocol; fine-tuning chooses its epoch on a held-in split of the training
  images) and scored **once** on the evaluation split (test, else val), which
  no selection ever saw;
* the automatic pick is read at the default budget and with no budget, after
  the fine-tuning trials decide runs there (timed against their budget); its
  score is that candidate's (the same run). A fine-tuning plan whose full run
  is over the default budget is listed but not trained.

Regret = best candidate's accuracy - the pick's, in points, with a paired
bootstrap 95 % interval over the evaluation images (each resample re-takes
the best). Held-in regret is the same on the held-in scores decide sees (the
heads' CV accuracy; fine-tuning's held-in accuracy at its chosen epoch): the
threshold sweep minimises it, never the evaluation regret. Times are wall
seconds here: extraction cold, profile, each candidate's training. Writes
``benchmarks/results/decision_quality.{json,md}`` (``--quick``: ``..._quick``; ``--name``
sets another name, e.g. for a subset of the sets).
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
from transferpilot.config import DecideParams, Params, TrainParams
from transferpilot.decide import Decision, best_head, choose_strategy, trial_plans
from transferpilot.errors import DataError
from transferpilot.features import FeatureTable, write_table
from transferpilot.finetune.trial_runs import run_trials
from transferpilot.intake import prepare_dataset
from transferpilot.layer_names import PIXELS
from transferpilot.profile import Profile
from transferpilot.profile.build import build_profile
from transferpilot.strategies import Context, get_strategy
from transferpilot.trial_plans import TrialReport
from transferpilot.zoo import Backbone, create_backbone

log = logging.getLogger("decision_quality")

#: Thresholds swept (the defaults are in DecideParams).
SIMILARITY_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SIZE_GRID = (50, 100, 150, 200, 300, 400, 600, 1000)


def key(strategy: str, layer: str, input_size: int | None = None) -> str:
    """A candidate's name: ``strategy:layer``, fine-tuning by resolution (``finetune:64px``)."""
    return f"{strategy}:{input_size}px" if strategy == "finetune" else f"{strategy}:{layer}"


def decision_key(decision: Decision) -> str:
    return key(decision.strategy, decision.layer, decision.train.input_size)


def _fit(backbone: Backbone, plan: Decision, table: FeatureTable, eval_split: str) -> dict:
    """Train ``plan`` as the train stage does; per-image correctness on the evaluation split."""
    start = time.perf_counter()
    split = table.split
    with tempfile.TemporaryDirectory() as ckpt:
        strategy = get_strategy(plan.strategy)(backbone, plan, Context(checkpoint_dir=Path(ckpt)))
        strategy.fit(table, split == "train", split == eval_split)
    rows = np.flatnonzero(split == eval_split)
    predicted = np.asarray(strategy.classes_)[strategy.predict_proba(table, rows).argmax(1)]
    summary = strategy.summary_
    return {
        "correct": (predicted == table.labels[rows]).astype(np.int8),
        "seconds": time.perf_counter() - start,
        "held_in_accuracy": summary.get("held_in_accuracy", summary.get("cv_accuracy")),
        "detail": (
            f"{summary['epochs_run']} ep @ {summary['input_size']}px, best {summary['best_epoch']}"
            if plan.strategy == "finetune"
            else f"C={summary['best_C']:g}"
            if "best_C" in summary
            else f"as it is, T={summary['temperature']:.2f}"  # the pretrained head
        ),
    }


def bootstrap_regret(
    correct: dict[str, np.ndarray], pick: str, draws: int, seed: int = 0
) -> tuple[float, float]:
    """Paired bootstrap 95 % interval of max(accuracy) - accuracy[pick], in points."""
    names = list(correct)
    matrix = np.stack([correct[n] for n in names]).astype(np.float64)  # (candidates, images)
    rng = np.random.default_rng(seed)
    n = matrix.shape[1]
    regrets = np.empty(draws)
    at = names.index(pick)
    for b in range(draws):
        acc = matrix[:, rng.integers(0, n, n)].mean(1)
        regrets[b] = acc.max() - acc[at]
    low, high = np.percentile(100 * regrets, [2.5, 97.5])
    return float(low), float(high)


def _pick(
    profile: Profile, rules: DecideParams, train: TrainParams, trials: TrialReport | None = None
) -> str:
    return decision_key(choose_strategy(profile, rules, train, trials=trials))


class Trials:
    """The fine-tuning trials decide runs, run once per (plans, budget) and timed."""

    def __init__(self, table: FeatureTable, backbone: Backbone, profile: Profile) -> None:
        self.table, self.backbone, self.profile = table, backbone, profile
        self.done: dict[str, tuple[TrialReport, float]] = {}

    def __call__(self, rules: DecideParams, train: TrainParams) -> tuple[TrialReport | None, float]:
        plans, budget_s, _ = trial_plans(self.profile, rules, train)
        if not plans:
            return None, 0.0
        name = repr((plans, budget_s))
        if name not in self.done:
            start = time.perf_counter()
            report = run_trials(
                self.table,
                self.backbone,
                plans,
                train,
                budget_s,
                rival=best_head(self.profile),
            )
            self.done[name] = report, time.perf_counter() - start
        return self.done[name]


def run_dataset(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = Params()
    backbone = create_backbone(params.model.name)
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    if intake.fatal:
        raise DataError(f"{folder}: {intake.fatal}")
    records = intake.records
    eval_split = "test" if any(r.split == "test" for r in records) else "val"
    train = params.train.model_copy(update={"c_grid": tuple(args.c_grid), "cv_folds": args.folds})
    base = params.decide.model_copy(update={"finetune_epochs": args.finetune_epochs})
    with tempfile.TemporaryDirectory() as tmp:
        extract = params.extract
        if args.cold:  # extraction timed from an empty cache
            extract = extract.model_copy(update={"cache_dir": Path(tmp) / "cache"})
        start = time.perf_counter()
        (Path(tmp) / "table").mkdir()
        meta, _ = write_table(backbone, records, Path(tmp) / "table", extract)
        table = FeatureTable(records, meta, Path(tmp) / "table")
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        profile = build_profile(table, backbone, params.profile, extract)
        profile_s = time.perf_counter() - start

        unlimited = base.model_copy(update={"budget_minutes": None})
        listed = choose_strategy(profile, unlimited, train).candidates
        runs: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for c in listed:
            layer = c.layer if c.strategy in ("linear", "svm") else None
            forced = unlimited.model_copy(update={"strategy": c.strategy, "layer": layer})
            own = train.model_copy(update={"input_size": c.input_size})
            name = key(c.strategy, c.layer, c.input_size)
            if c.strategy == "finetune" and (c.minutes or 0) > (base.budget_minutes or 1e9):
                skipped[name] = f"not trained: {c.minutes:.0f} min, over the default budget"
                log.info("%s: %s %s", folder.name, name, skipped[name])
                continue
            plan = choose_strategy(profile, forced, own if c.strategy == "finetune" else train)
            run = _fit(backbone, plan, table, eval_split)
            run |= {"strategy": c.strategy, "layer": c.layer, "held_in_cv": c.score}
            run["accuracy"] = float(run["correct"].mean())
            runs[name] = run
            log.info(
                "%s: %s %.3f (%s, %.0f s)",
                folder.name,
                name,
                run["accuracy"],
                run["detail"],
                run["seconds"],
            )
        correct = {k: r["correct"] for k, r in runs.items()}
        best = max(runs, key=lambda k: runs[k]["accuracy"])
        held_in = {k: _held_in_score(r) for k, r in runs.items()}
        trials = Trials(table, backbone, profile)
        picks: dict[str, Any] = {}
        for label, rules in (("default budget", base), ("no budget", unlimited)):
            report, trial_s = trials(rules, train)
            pick = _pick(profile, rules, train, report)
            entry: dict[str, Any] = {
                "pick": pick,
                "trials": None if report is None else report.to_dict(),
                "trial_seconds": trial_s,
            }
            if pick not in runs:  # a fine-tuning plan over the default budget
                picks[label] = entry | {"accuracy": None, "note": skipped.get(pick, "")}
                continue
            low, high = bootstrap_regret(correct, pick, args.bootstrap)
            picks[label] = entry | {
                "accuracy": runs[pick]["accuracy"],
                "regret_points": 100 * (runs[best]["accuracy"] - runs[pick]["accuracy"]),
                "regret_95": [low, high],
                "held_in_regret_points": 100 * (max(held_in.values()) - held_in[pick]),
                "seconds": extract_s + profile_s + trial_s + runs[pick]["seconds"],
            }
        default_trials = trials(base, train)[0]
    finetune = max(
        (r for r in runs.values() if r["strategy"] == "finetune"), key=lambda r: r["accuracy"]
    )
    baseline = max((r for r in runs.values() if r["layer"] == PIXELS), key=lambda r: r["accuracy"])
    return {
        "dataset": folder.name,
        "evaluated_on": eval_split,
        "eval_images": len(next(iter(correct.values()))),
        "images": len(records),
        "quadrant": choose_strategy(profile, base, train).quadrant,
        "similarity": profile.similarity.score,
        "median_per_class": profile.size.images_per_class["median"],
        "best": {"candidate": best, "accuracy": runs[best]["accuracy"]},
        "baseline_accuracy": baseline["accuracy"],
        "picks": picks,
        "extract_seconds": extract_s,
        "profile_seconds": profile_s,
        "finetune_seconds": finetune["seconds"],
        "profile": profile.to_dict(),
        "trials": None if default_trials is None else default_trials.to_dict(),
        "skipped": skipped,
        "runs": {
            k: {f: v for f, v in r.items() if f != "correct"}
            | {"correct": "".join(map(str, r["correct"].tolist()))}  # per val image, 1 = right
            for k, r in runs.items()
        },
    }


def _held_in_score(run: dict[str, Any]) -> float:
    """What decide could know of a candidate: the heads' CV accuracy on the probe sample,
    fine-tuning's held-in accuracy at its chosen epoch."""
    if run["strategy"] == "finetune":
        return float(run["held_in_accuracy"])
    return float(run["held_in_cv"])


def sweep(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Held-in and evaluation regret of the automatic pick (no budget) as the thresholds move."""
    rows = []
    train = Params().train.model_copy(update={"c_grid": tuple(args.c_grid), "cv_folds": args.folds})
    for sim in SIMILARITY_GRID:
        for size in SIZE_GRID:
            rules = DecideParams(
                similarity_threshold=sim,
                large_images_per_class=size,
                budget_minutes=None,
                finetune_epochs=args.finetune_epochs,
            )
            held, val = [], []
            for r in results:
                profile = Profile.from_dict(r["profile"])
                runs = r["runs"]
                report = TrialReport.from_dict(r["trials"]) if r.get("trials") else None
                pick = _pick(profile, rules, train, report)
                if pick not in runs:
                    continue  # a plan over the default budget: not trained
                scores = {k: _held_in_score(x) for k, x in runs.items()}
                held.append(100 * (max(scores.values()) - scores[pick]))
                val.append(100 * (r["best"]["accuracy"] - runs[pick]["accuracy"]))
            rows.append(
                {
                    "similarity_threshold": sim,
                    "large_images_per_class": size,
                    "held_in_regret_mean": float(np.mean(held)),
                    "held_in_regret_max": float(np.max(held)),
                    "eval_regret_mean": float(np.mean(val)),
                    "eval_regret_max": float(np.max(val)),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", type=Path, help="image folders (default: shared)")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 1 epoch, 2 folds")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="decide.finetune_epochs")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--warm", dest="cold", action="store_false", help="reuse the feature cache")
    parser.add_argument("--name", help="results file name (default: decision_quality[_quick])")
    args = parser.parse_args()
    args.c_grid, args.folds = [0.001, 0.01, 0.1, 1.0], 3
    if args.quick:
        args.finetune_epochs, args.folds, args.c_grid = 1, 2, [0.01, 0.1]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folders = args.datasets or sorted(p for p in SHARED.iterdir() if p.is_dir())
    results = [run_dataset(folder, args) for folder in folders]
    m = machine()
    rows = []
    for r in results:
        d, n = r["picks"]["default budget"], r["picks"]["no budget"]
        lo, hi = d["regret_95"]
        t = d["trials"]
        trial = "—"
        if t and t["trials"]:
            top = max(t["trials"], key=lambda x: (x["rung"], x["accuracy"]))
            trial = (
                f"{top['accuracy']:.3f} @{top['input_size']}px, {d['trial_seconds']:.0f} s "
                f"of {t['budget_s']:.0f} s"
            )
        rows.append(
            [
                r["dataset"],
                r["quadrant"],
                f"{r['similarity']:.2f}",
                f"{r['eval_images']}",
                d["pick"],
                f"{d['accuracy']:.3f}",
                r["best"]["candidate"],
                f"{r['best']['accuracy']:.3f}",
                f"{d['regret_points']:.1f} [{lo:.1f}, {hi:.1f}]",
                f"{d['held_in_regret_points']:.1f}",
                n["pick"] if n["pick"] != d["pick"] else "same",
                "—" if n["accuracy"] is None else f"{n['regret_points']:.1f}",
                f"{r['baseline_accuracy']:.3f}",
                trial,
                f"{d['seconds']:.0f}",
                f"{r['finetune_seconds']:.0f}",
            ]
        )
    title = (
        f"Decision quality, efficientnet_lite0: every candidate decide weighs, scored once on "
        f"val; fine-tuning plans {args.finetune_epochs} epochs (epoch chosen on held-in data); "
        f"heads C by {args.folds}-fold CV; default budget "
        f"{DecideParams().budget_minutes:g} min — {stamp(m)}, {m['cpu']}, {m['cores']} cores"
    )
    table = print_table(
        title,
        ["dataset", "quadrant", "sim", "eval n", "auto pick", "auto acc", "best candidate",
         "best acc", "regret pt [95% CI]", "held-in regret pt", "no-budget pick",
         "no-budget regret pt", "no-transfer acc", "trial (held-in, time of budget)", "auto s",
         "finetune s"],
        rows,
    )  # fmt: skip
    curve = sweep(results, args)
    sweep_table = print_table(
        "Threshold sweep (no budget): mean / max regret over the datasets, held-in and on val",
        ["similarity", "images/class", "held-in mean", "held-in max", "val mean", "val max"],
        [
            [
                f"{c['similarity_threshold']:.2f}",
                str(c["large_images_per_class"]),
                f"{c['held_in_regret_mean']:.2f}",
                f"{c['held_in_regret_max']:.1f}",
                f"{c['eval_regret_mean']:.2f}",
                f"{c['eval_regret_max']:.1f}",
            ]
            for c in curve
        ],
    )
    name = args.name or ("decision_quality_quick" if args.quick else "decision_quality")
    root = Path(__file__).resolve().parents[1]
    settings = vars(args) | {"datasets": [os.path.relpath(f.resolve(), root) for f in folders]}
    payload = {"machine": m, "args": settings, "results": results, "sweep": curve}
    write_results(name, payload, table + "\n\n" + sweep_table)


if __name__ == "__main__":
    main()
