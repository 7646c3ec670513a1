"""Benchmark: on a 10:1 imbalanced training set, do class weights help the small classes?

    python -m benchmarks.imbalance [DATASET_DIR ...] [--ratio 10] [--seeds 3]

For each dataset (default: flowers11 and resisc8 from ``../shared/datasets``): the
training images are subsampled so that class sizes fall geometrically from all of a
class to a ``--ratio``-th of it (classes shuffled per seed). On Lite0's CNN codes
(cached under ``data/cache/features``), each head kind (softmax regression, the linear
SVM) is fitted twice, as the train stage fits it: unweighted only (before), and balanced
the way cross-validated balanced accuracy chooses — as it is, class weights, or a prior
shift (now). Scored
once on the untouched val split: balanced accuracy (the mean per-class recall), and the
accuracy expected where images arrive in the training set's proportions (per-class
recall weighted by them; a subsampled val set would leave the small classes a couple of
images). Target (issue #31): >= 3 points of balanced accuracy over unweighted, <= 1 point
of accuracy lost. Writes ``benchmarks/results/imbalance.{json,md}``.
"""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np

from benchmarks._common import dataset_setup, feature_table, publish
from transferpilot.config import TrainParams
from transferpilot.estimators import KIND_NAMES, LinearClassifier
from transferpilot.features import FeatureTable
from transferpilot.layer_names import PRE_LOGITS

DEFAULT = ("flowers11", "resisc8")


def skewed(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Row indices keeping, class by class (in a seeded order), a share falling
    geometrically from 1 to ``1 / ratio``."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    shares = np.geomspace(1.0, 1.0 / ratio, len(classes))
    kept = []
    for label, share in zip(classes, shares, strict=True):
        rows = np.flatnonzero(labels == label)
        kept.append(rng.choice(rows, size=max(2, round(share * len(rows))), replace=False))
    return np.sort(np.concatenate(kept))


def scores(head: LinearClassifier, X: np.ndarray, y: np.ndarray, prior: dict) -> dict:
    predicted = head.predict(X)
    recall = {c: float((predicted[y == c] == c).mean()) for c in np.unique(y)}
    return {
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "skewed_accuracy": float(sum(prior[c] * r for c, r in recall.items())),
        "rebalance": head.rebalance_,
    }


def one_run(table: FeatureTable, kind: str, ratio: float, seed: int) -> dict:
    split = table.split
    train, held = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    codes = table.array(PRE_LOGITS)
    keep = train[skewed(table.labels[train], ratio, seed)]
    X, y = codes[keep], table.labels[keep]
    classes, counts = np.unique(y, return_counts=True)
    prior = dict(zip(classes, counts / counts.sum(), strict=True))
    settings = TrainParams(seed=seed)
    out = {"seed": seed, "train_images": len(keep), "imbalance": float(counts.max() / counts.min())}
    for name, balance in (("before", False), ("now", True)):
        head = LinearClassifier.from_settings(kind, settings).set_params(balance=balance)
        head.fit(X, y)
        out[name] = scores(head, codes[held], table.labels[held], prior)
    return out


def main() -> None:
    args, datasets, backbone = dataset_setup(__doc__.split("\n")[0], DEFAULT, ratio=10.0, seeds=3)
    rows, results = [], []
    for folder in datasets:
        with feature_table(backbone, folder, args.cache) as table:
            for kind in ("linear", "svm"):
                runs = [one_run(table, kind, args.ratio, seed) for seed in range(args.seeds)]
                results.append({"dataset": folder.name, "kind": kind, "runs": runs})

                def med(when: str, key: str, runs: list[dict] = runs) -> float:
                    return statistics.median(r[when][key] for r in runs)

                gain = statistics.median(
                    r["now"]["balanced_accuracy"] - r["before"]["balanced_accuracy"] for r in runs
                )
                lost = statistics.median(
                    r["before"]["skewed_accuracy"] - r["now"]["skewed_accuracy"] for r in runs
                )
                chosen = Counter(r["now"]["rebalance"] for r in runs)
                rows.append(
                    [
                        folder.name,
                        KIND_NAMES[kind],
                        f"{statistics.median(r['train_images'] for r in runs):.0f}",
                        f"{med('before', 'balanced_accuracy'):.3f}",
                        f"{med('now', 'balanced_accuracy'):.3f}",
                        f"{100 * gain:+.1f}",
                        f"{med('before', 'skewed_accuracy'):.3f}",
                        f"{med('now', 'skewed_accuracy'):.3f}",
                        f"{-100 * lost:+.1f}",
                        ", ".join(f"{k} {n}" for k, n in sorted(chosen.items())),
                    ]
                )
    title = (
        f"Imbalance: training classes subsampled {args.ratio:g}:1 (geometric), heads on Lite0's "
        f"CNN codes unweighted (before) or balanced as CV balanced accuracy chooses: as they are, "
        f"class weights or a prior shift (now); scored on the untouched val split; median of "
        f"{args.seeds} seeds"
    )
    header = [
        "dataset", "head", "train", "bal. acc before", "bal. acc now", "points",
        "acc before", "acc now", "points", "rebalanced by (runs)",
    ]  # fmt: skip
    publish("imbalance", title, header, rows, args, results)


if __name__ == "__main__":
    main()
