"""Benchmark: with 5 to 20 images per class, which head, and does CV pick it?

    python -m benchmarks.tiny [DATASET_DIR ...] [--seeds 3]

For each dataset (default: hymenoptera, flowers11 and resisc8 from ``../shared/datasets``)
and each of 5, 10 and 20 training images per class (drawn per seed): softmax regression,
the linear SVM and the nearest class mean (SimpleShot) on Lite0's CNN codes, fitted as
the train stage fits them (C by CV where there is one), scored once on the untouched val
split. "CV pick" is the head with the best cross-validated accuracy on those few images
(as ``decide`` weighs candidates), and its val accuracy; regret is the best head's val
accuracy minus the pick's, in points. Writes ``benchmarks/results/tiny.{json,md}``.
"""

from __future__ import annotations

import statistics

import numpy as np

from benchmarks._common import dataset_setup, feature_table, publish
from transferpilot.config import TrainParams
from transferpilot.estimators import KIND_NAMES, LinearClassifier
from transferpilot.features import FeatureTable
from transferpilot.layer_names import PRE_LOGITS

DEFAULT = ("hymenoptera", "flowers11", "resisc8")
KINDS = ("linear", "svm", "ncm")
SHOTS = (5, 10, 20)


def few(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                for c in np.unique(labels)
            ]
        )
    )


def one_run(table: FeatureTable, shots: int, seed: int) -> dict:
    split, codes = table.split, table.array(PRE_LOGITS)
    train, held = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    keep = train[few(table.labels[train], shots, seed)]
    out: dict = {"seed": seed, "shots": shots}
    for kind in KINDS:
        head = LinearClassifier.from_settings(kind, TrainParams(seed=seed))
        head.fit(codes[keep], table.labels[keep])
        val = float((head.predict(codes[held]) == table.labels[held]).mean())
        out[kind] = {"cv_accuracy": head.cv_accuracy_, "val_accuracy": val}
    pick = max(KINDS, key=lambda k: out[k]["cv_accuracy"])  # ties: the first, as listed
    out["pick"] = pick
    out["regret"] = max(out[k]["val_accuracy"] for k in KINDS) - out[pick]["val_accuracy"]
    return out


def main() -> None:
    args, datasets, backbone = dataset_setup(__doc__.split("\n")[0], DEFAULT, seeds=3)
    rows, results = [], []
    for folder in datasets:
        with feature_table(backbone, folder, args.cache) as table:
            for shots in SHOTS:
                runs = [one_run(table, shots, seed) for seed in range(args.seeds)]
                results.append({"dataset": folder.name, "shots": shots, "runs": runs})
                picks = [r["pick"] for r in runs]
                rows.append(
                    [
                        folder.name,
                        shots,
                        *(
                            f"{statistics.median(r[k]['val_accuracy'] for r in runs):.3f}"
                            for k in KINDS
                        ),
                        ", ".join(f"{k} {picks.count(k)}" for k in KINDS if k in picks),
                        f"{statistics.median(r[r['pick']]['val_accuracy'] for r in runs):.3f}",
                        f"{100 * statistics.median(r['regret'] for r in runs):.1f}",
                    ]
                )
    title = (
        f"Tiny sets: 5, 10 and 20 training images per class, heads on Lite0's CNN codes scored "
        f"on the untouched val split; median of {args.seeds} seeds"
    )
    header = ["dataset", "per class", *(KIND_NAMES[k] for k in KINDS),
              "CV pick (runs)", "pick's acc", "regret pt"]  # fmt: skip
    publish("tiny", title, header, rows, args, results)


if __name__ == "__main__":
    main()
