"""Benchmark: ten scheduled retrainings with good and bad batches; does the model in
service ever get worse?

    python -m benchmarks.promotion [DATASET_DIR ...] [--runs 10] [--seeds 3] [--bad 0.4]

For each dataset (default: flowers11 and resisc8 from ``../shared/datasets``), on Lite0's
CNN codes (cached under ``data/cache/features``): the val split is the frozen evaluation
set; the first run trains on a quarter of the training images, and each of ``--runs``
later runs adds a batch (the rest, in equal parts), bad with probability ``--bad``: 30 %
of its labels flipped to another class. Bad batches stay in the folder, as a user's would.
Each run trains a challenger the way the train stage does (softmax regression, C by
cross-validation) on everything the folder holds, and the product's rules decide
(:func:`transferpilot.promotion.compare` with the 0.5-point margin, then
:func:`~transferpilot.promotion.label_check` on the run's label issues, cleanlab on the
out-of-fold probabilities). Always promoting is the baseline. Target (issue #30): the
frozen-evaluation accuracy of the model in service never drops by more than the margin
from one run to the next. Writes ``benchmarks/results/promotion.{json,md}``.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np

from benchmarks._common import dataset_setup, feature_table, publish
from transferpilot.config import PromoteParams, TrainParams
from transferpilot.estimators import LinearClassifier
from transferpilot.label_issues import find_label_issues
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.promotion import compare, label_check

DEFAULT = ("flowers11", "resisc8")
RULES = PromoteParams()


def flip(labels: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = labels.copy()
    classes = np.unique(labels)
    for i in np.flatnonzero(rng.random(len(labels)) < share):
        out[i] = rng.choice(classes[classes != labels[i]])
    return out


def replay(codes, labels, split, runs: int, bad: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    held = np.flatnonzero(split == "val")
    pool = rng.permutation(np.flatnonzero(split == "train"))
    first = len(pool) // 4
    batches = [pool[:first], *np.array_split(pool[first:], runs)]
    kinds = ["first", *("bad" if rng.random() < bad else "good" for _ in range(runs))]
    given = labels.copy()  # the labels the folder gives
    rows: list[int] = []
    champion = champion_rows = None
    trace, naive, steps = [], [], []
    for kind, batch in zip(kinds, batches, strict=True):
        if kind == "bad":
            given[batch] = flip(labels[batch], 0.3, rng)
        rows += batch.tolist()
        head = LinearClassifier.from_settings("linear", TrainParams(seed=seed))
        head.fit(codes[rows], given[rows])
        correct = dict(enumerate((head.predict(codes[held]) == labels[held]).tolist()))
        accuracy = float(np.mean(list(correct.values())))
        naive.append(accuracy)
        if champion is None:
            promoted, why = True, "first"
        else:
            result = compare(correct, champion, margin=RULES.margin / 100)
            issues = find_label_issues(
                [str(r) for r in rows], [str(g) for g in given[rows]],
                head.out_of_fold_proba(), [str(c) for c in head.classes_], source="replay",
            )  # fmt: skip
            flagged = {int(i.path) for i in issues.issues}
            new = [r for r in rows if r not in champion_rows]
            old = [r for r in rows if r in champion_rows]
            check = label_check(
                sum(r in flagged for r in new), len(new), sum(r in flagged for r in old),
                len(old), max_rise=RULES.label_issue_rise / 100,
            )  # fmt: skip
            promoted = result.promoted and check.passed
            why = "promoted" if promoted else "accuracy" if not result.promoted else "labels"
        if promoted:
            champion, champion_rows = correct, set(rows)
        trace.append(float(np.mean(list(champion.values()))))
        steps.append({"batch": kind, "challenger": accuracy, "verdict": why})
    drops = [b - a for a, b in itertools.pairwise(trace)]
    return {
        "seed": seed,
        "steps": steps,
        "in_service": trace,
        "always_promote": naive,
        "worst_drop": float(min(drops, default=0.0)),
        "bad_held": sum(s["batch"] == "bad" and s["verdict"] != "promoted" for s in steps),
        "bad": kinds.count("bad"),
        "good_held": sum(s["batch"] == "good" and s["verdict"] != "promoted" for s in steps),
        "good": kinds.count("good"),
    }


def main() -> None:
    args, datasets, backbone = dataset_setup(
        __doc__.split("\n")[0], DEFAULT, runs=10, seeds=3, bad=0.4
    )
    rows, results = [], []
    for folder in datasets:
        with feature_table(backbone, folder, args.cache) as table:
            codes, labels, split = np.array(table.array(PRE_LOGITS)), table.labels, table.split
        done = [replay(codes, labels, split, args.runs, args.bad, s) for s in range(args.seeds)]
        results.append({"dataset": folder.name, "replays": done})
        worst = min(r["worst_drop"] for r in done)
        rows.append(
            [
                folder.name,
                len(done),
                f"{sum(r['bad_held'] for r in done)} of {sum(r['bad'] for r in done)}",
                f"{sum(r['good_held'] for r in done)} of {sum(r['good'] for r in done)}",
                f"{100 * worst:+.1f}",
                "met" if worst >= -RULES.margin / 100 - 1e-9 else "NOT met",
                f"{100 * statistics.median(r['in_service'][-1] for r in done):.1f}",
                f"{100 * statistics.median(r['always_promote'][-1] for r in done):.1f}",
                f"{100 * statistics.median(min(r['always_promote']) for r in done):.1f}",
            ]
        )
        print(rows[-1], flush=True)
    title = (
        f"Promotion replay: {args.runs} retrainings after a first quarter of the training images, "
        f"each batch bad (30 % flipped labels) with probability {args.bad}; softmax regression "
        f"on Lite0's pre_logits; frozen evaluation on val; margin {RULES.margin} points; "
        f"{args.seeds} seeds"
    )
    header = [
        "dataset", "replays", "bad batches held back", "good batches held back",
        "worst step of the model in service (points)", "target (>= -0.5)",
        "final in service %", "final always-promote %", "worst always-promote %",
    ]  # fmt: skip
    publish("promotion", title, header, rows, args, results)


if __name__ == "__main__":
    main()
