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
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, machine, print_table, stamp, write_results
from transferpilot.config import ExtractParams, PrepareParams, TrainParams
from transferpilot.decide import Decision
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import prepare_dataset
from transferpilot.strategies import get_strategy
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
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            settings = ExtractParams(cache_dir=args.cache)
            meta, stats = write_table(backbone, intake.records, Path(tmp), settings)
            extract_s = time.perf_counter() - start
            table = FeatureTable(intake.records, meta, Path(tmp))
            train, val = table.split == "train", np.flatnonzero(table.split == "val")
            entry = {
                "dataset": folder.name,
                "images": len(intake.records),
                "classes": len(intake.classes),
                "extract_s": extract_s,
                "computed": stats.computed,
            }
            for kind in ("linear", "svm"):  # the train stage's strategies, through their protocol
                plan = Decision(
                    "-", "-", "-", kind, args.layer, "benchmark", TrainParams().for_strategy(kind)
                )
                start = time.perf_counter()
                head = get_strategy(kind)(backbone, plan).fit(table, train, table.split == "val")
                fit_s = time.perf_counter() - start
                predicted = np.asarray(head.classes_)[head.predict_proba(table, val).argmax(1)]
                entry[kind] = {
                    "val_accuracy": float((predicted == table.labels[val]).mean()),
                    "cv_accuracy": head.summary_["cv_accuracy"],
                    "C": head.summary_["best_C"],
                    "fit_s": fit_s,
                }
        results.append(entry)
        rows.append(
            [
                folder.name,
                entry["images"],
                f"{extract_s:.1f} ({entry['computed']} new)",
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
