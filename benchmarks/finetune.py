"""Benchmark: fine-tuning with the default recipe against the best linear probe.

    python -m benchmarks.finetune [--quick]

* hymenoptera at the model's resolution (target: val accuracy >= 0.94; the
  PyTorch tutorial's ResNet-18 reaches 0.93-0.96);
* mnist at a reduced resolution (default 64 px): fine-tuning must beat the
  best linear probe on the cached features.

The plan (frozen layers, learning-rate ratio) is what ``decide`` gives with
``strategy: finetune``; the recipe is ``train``'s defaults. Prints a table and
writes ``benchmarks/results/finetune.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, machine, print_table, stamp, write_results
from transferpilot.config import DecideParams, Params
from transferpilot.decide import choose_strategy
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import prepare_dataset
from transferpilot.profile_folder import profile_folder
from transferpilot.strategies import Context, get_strategy
from transferpilot.zoo import PRE_LOGITS, create_backbone


def _fit(backbone, decision, table: FeatureTable, ckpt: Path):
    """Train ``decision``'s plan through the strategy protocol, as the train stage does."""
    strategy = get_strategy(decision.strategy)(backbone, decision, Context(checkpoint_dir=ckpt))
    return strategy.fit(table, table.split == "train", table.split == "val")


def run(name: str, input_size: int | None, epochs: int | None, probe: bool) -> dict:
    folder = SHARED / name
    params = Params()
    backbone = create_backbone(params.model.name)
    assessment = profile_folder(folder, params, sample=1000)
    train_params = params.train.model_copy(update={"input_size": input_size, "epochs": epochs})
    decision = choose_strategy(assessment.profile, DecideParams(strategy="finetune"), train_params)
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    with tempfile.TemporaryDirectory() as tmp:
        meta, _ = write_table(backbone, intake.records, Path(tmp), params.extract)
        table = FeatureTable(intake.records, meta, Path(tmp))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as ckpt:
            tuned = _fit(backbone, decision, table, Path(ckpt))
        seconds = time.perf_counter() - start
        result = tuned.tuner.result_
        entry = {
            "dataset": name,
            "input_size": tuned.summary_["input_size"],
            "epochs_planned": decision.train.epochs,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "val_accuracy": result.best_val_accuracy,
            "frozen": tuned.summary_["frozen"],
            "lr_ratio": decision.train.lr_ratio,
            "seconds": seconds,
            "train_images_per_s": float(np.median([h.images_per_s for h in result.history])),
            "history": [vars(h) for h in result.history],
        }
        if probe:  # both linear strategies on the CV-best layer and the codes, scored on val
            probes = sorted(assessment.profile.probes, key=lambda p: -p.cv_accuracy)
            val = np.flatnonzero(table.split == "val")
            best = ("", "", -1.0)
            for layer in dict.fromkeys([probes[0].layer, PRE_LOGITS]):
                for kind in ("linear", "svm"):
                    rules = DecideParams(strategy=kind, layer=layer)
                    plan = choose_strategy(assessment.profile, rules, params.train)
                    head = _fit(backbone, plan, table, Path(tmp))
                    predicted = np.asarray(head.classes_)[head.predict_proba(table, val).argmax(1)]
                    acc = float((predicted == table.labels[val]).mean())
                    best = max(best, (kind, layer, acc), key=lambda b: b[2])
            entry["best_probe"] = {"strategy": best[0], "layer": best[1], "val_accuracy": best[2]}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs each (CI-sized)")
    parser.add_argument("--mnist-size", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    epochs = 2 if args.quick else None
    results = [
        run("hymenoptera", None, epochs, probe=False),
        run("mnist", args.mnist_size, epochs or 5, probe=True),
    ]
    rows = []
    for r in results:
        probe = r.get("best_probe")
        target = ">= 0.94" if r["dataset"] == "hymenoptera" else "> best probe"
        rows.append(
            [
                r["dataset"],
                r["input_size"],
                f"{r['epochs_run']} (best {r['best_epoch']})",
                f"{r['val_accuracy']:.3f}",
                f"{probe['val_accuracy']:.3f} ({probe['strategy']}, {probe['layer']})"
                if probe
                else "",
                target,
                f"{r['train_images_per_s']:.1f}",
                f"{r['seconds'] / 60:.1f}",
            ]
        )
    m = machine()
    title = (
        f"Fine-tuning efficientnet_lite0, default recipe (LP-FT head, AdamW, warm-up + cosine, "
        f"label smoothing 0.1) — {stamp(m)}, {m['cpu']}, {m['cores']} cores, CPU"
    )
    header = [
        "dataset",
        "px",
        "epochs",
        "val acc",
        "best linear probe (val)",
        "target",
        "train img/s",
        "minutes",
    ]
    table = print_table(title, header, rows)
    name = "finetune_quick" if args.quick else "finetune"
    write_results(name, {"machine": m, "results": results}, table)


if __name__ == "__main__":
    main()
