"""Benchmark: are flipped labels found, and does dropping what is found help?

    python -m benchmarks.label_issues [DATASET_DIR ...] [--flip 0.05] [--seeds 1]

For each dataset (default: flowers11 and resisc8 from ``../shared/datasets``): the CNN
codes (``pre_logits`` of Lite0, cached under ``data/cache/features``); a share ``--flip``
of the training images is given another class's label at random; softmax regression
(the ``linear`` strategy's estimator and settings, C by 5-fold CV) is fitted on the
noisy labels, and confident learning (cleanlab, as the train stage runs it) flags images
from its out-of-fold probabilities. Precision and recall of the flags against the
flipped images; accuracy on the evaluation split (test, else val, never flipped) of the
head fitted on the noisy labels, on them less the flagged images, and on the clean
labels. Targets (issue #31): precision >= 0.5, recall >= 0.6. Writes
``benchmarks/results/label_issues.{json,md}``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks._common import dataset_setup, feature_table, publish
from transferpilot.config import TrainParams
from transferpilot.estimators import LinearClassifier
from transferpilot.features import FeatureTable
from transferpilot.label_issues import find_label_issues

DEFAULT = ("flowers11", "resisc8")


def flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` with a random ``share`` changed to another class; and which."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    chosen = rng.choice(len(labels), round(share * len(labels)), replace=False)
    noisy = labels.copy()
    for i in chosen:
        noisy[i] = rng.choice(classes[classes != labels[i]])
    return noisy, np.sort(chosen)


def accuracy(X: np.ndarray, y: np.ndarray, X_eval: np.ndarray, y_eval: np.ndarray) -> float:
    head = LinearClassifier.from_settings("linear", TrainParams()).fit(X, y)
    return float((head.predict(X_eval) == y_eval).mean())


def one_run(table: FeatureTable, share: float, seed: int) -> dict:
    split = table.split
    train = np.flatnonzero(split == "train")
    held = np.flatnonzero(split == ("test" if (split == "test").any() else "val"))
    X, X_eval = table.array("pre_logits")[train], table.array("pre_logits")[held]
    clean, y_eval = table.labels[train], table.labels[held]
    noisy, flipped = flip(clean, share, seed)
    start = time.perf_counter()
    head = LinearClassifier.from_settings("linear", TrainParams()).fit(X, noisy)
    fit_s = time.perf_counter() - start
    paths = [str(table.records[i].path) for i in train]
    start = time.perf_counter()
    issues = find_label_issues(
        paths, noisy, head.out_of_fold_proba(), list(head.classes_), source="benchmark"
    )
    find_s = time.perf_counter() - start
    flagged = np.flatnonzero(np.isin(paths, sorted(issues.droppable())))
    hits = len(np.intersect1d(flagged, flipped))
    keep = np.setdiff1d(np.arange(len(train)), flagged)
    return {
        "seed": seed,
        "train_images": len(train),
        "flipped": len(flipped),
        "flagged": len(flagged),
        "precision": hits / max(len(flagged), 1),
        "recall": hits / max(len(flipped), 1),
        "accuracy_noisy": float((head.predict(X_eval) == y_eval).mean()),
        "accuracy_dropped": accuracy(X[keep], noisy[keep], X_eval, y_eval),
        "accuracy_clean": accuracy(X, clean, X_eval, y_eval),
        "eval_images": len(held),
        "head_fit_s": fit_s,
        "find_s": find_s,
    }


def main() -> None:
    args, datasets, backbone = dataset_setup(__doc__.split("\n")[0], DEFAULT, flip=0.05)
    rows, results = [], []
    for folder in datasets:
        with feature_table(backbone, folder, args.cache) as table:
            runs = [one_run(table, args.flip, seed) for seed in range(args.seeds)]
        results.append({"dataset": folder.name, "flip": args.flip, "runs": runs})

        def med(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        rows.append(
            [
                folder.name,
                runs[0]["train_images"],
                runs[0]["flipped"],
                f"{med('flagged'):.0f}",
                f"{med('precision'):.2f}",
                f"{med('recall'):.2f}",
                f"{med('accuracy_noisy'):.3f}",
                f"{med('accuracy_dropped'):.3f}",
                f"{med('accuracy_clean'):.3f}",
                f"{med('find_s'):.2f}",
            ]
        )
    title = (
        f"Label issues: {args.flip:.0%} of training labels flipped, confident learning "
        f"(cleanlab) on softmax regression's out-of-fold probabilities on Lite0's CNN codes; "
        f"median of {args.seeds} seed(s)"
    )
    header = [
        "dataset", "train", "flipped", "flagged", "precision", "recall",
        "acc noisy", "acc flagged dropped", "acc clean", "cleanlab s",
    ]  # fmt: skip
    publish("label_issues", title, header, rows, args, results)


if __name__ == "__main__":
    main()
