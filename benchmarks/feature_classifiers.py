"""Benchmark: both linear strategies on cached CNN codes of each dataset.

    python benchmarks/feature_classifiers.py [DATASET_DIR ...] [--layer pre_logits]

Default datasets: every set in ``../shared/datasets``. For each: intake,
extraction (cached under ``data/cache/features``, so a re-run is quick),
then softmax regression and the linear SVM, C chosen by 5-fold CV on train,
scored on val. Prints a table and writes ``benchmarks/results/feature_classifiers.*``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, machine, print_table, stamp, write_results
from transferpilot.config import ExtractParams, PrepareParams, TrainParams
from transferpilot.features import extract_features
from transferpilot.intake import prepare_dataset
from transferpilot.strategies import LinearClassifier
from transferpilot.zoo import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", type=Path)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--layer", default="pre_logits")
    parser.add_argument("--cache", type=Path, default=Path("data/cache/features"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    datasets = args.datasets or sorted(p for p in SHARED.iterdir() if p.is_dir())
    backbone = create_backbone(args.model)
    rows, results = [], []
    for folder in datasets:
        intake = prepare_dataset(PrepareParams(source=folder))
        items = [(r.path, r.sha256) for r in intake.records]
        start = time.perf_counter()
        feats = extract_features(backbone, items, ExtractParams(cache_dir=args.cache))
        extract_s = time.perf_counter() - start
        X = feats.arrays[args.layer]
        y = np.array([r.label for r in intake.records])
        train = np.array([r.split == "train" for r in intake.records])
        val = np.array([r.split == "val" for r in intake.records])
        entry = {
            "dataset": folder.name,
            "images": len(items),
            "classes": len(intake.classes),
            "extract_s": extract_s,
            "computed": feats.stats.computed,
        }
        for strategy in ("linear", "svm"):
            probe = LinearClassifier.from_settings(strategy, TrainParams())
            start = time.perf_counter()
            probe.fit(X[train], y[train])
            fit_s = time.perf_counter() - start
            acc = float((probe.predict(X[val]) == y[val]).mean())
            entry[strategy] = {
                "val_accuracy": acc,
                "cv_accuracy": probe.cv_accuracy_,
                "C": probe.best_C_,
                "fit_s": fit_s,
            }
        results.append(entry)
        rows.append(
            [
                folder.name,
                len(items),
                f"{extract_s:.1f} ({feats.stats.computed} new)",
                f"{entry['linear']['val_accuracy']:.3f}",
                f"{entry['linear']['fit_s']:.1f}",
                f"{entry['svm']['val_accuracy']:.3f}",
                f"{entry['svm']['fit_s']:.1f}",
            ]
        )
    m = machine()
    title = (
        f"Linear strategies on {args.layer} of {args.model} (val accuracy; C by 5-fold CV "
        f"on train) — {stamp(m)}, {m['cpu']}, {m['cores']} cores"
    )
    header = ["dataset", "images", "extract s", "logistic acc", "fit s", "linear SVM acc", "fit s"]
    table = print_table(title, header, rows)
    write_results(
        "feature_classifiers",
        {"machine": m, "model": args.model, "layer": args.layer, "results": results},
        table,
    )


if __name__ == "__main__":
    main()
