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
from transferpilot.assess import assess_folder
from transferpilot.config import DecideParams, Params, TrainParams
from transferpilot.decide import choose_strategy
from transferpilot.features import extract_features, linear_inputs
from transferpilot.finetune import Finetuner
from transferpilot.intake import prepare_dataset
from transferpilot.strategies import LinearClassifier
from transferpilot.zoo import PRE_LOGITS, create_backbone


def best_probe(params: Params, folder: Path, backbone, layers: list[str]) -> tuple[str, str, float]:
    """Best val accuracy of both linear strategies on ``layers`` (features at default size)."""
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    feats = extract_features(
        backbone,
        [(r.path, r.sha256) for r in intake.records],
        params.extract,
    )
    y = np.array([r.label for r in intake.records])
    tr = np.array([r.split == "train" for r in intake.records])
    best = ("", "", -1.0)
    for layer in layers:
        for strategy in ("linear", "svm"):
            X = linear_inputs(layer, feats.arrays[layer])
            est = LinearClassifier.from_settings(strategy, TrainParams()).fit(X[tr], y[tr])
            acc = float((est.predict(X[~tr]) == y[~tr]).mean())
            if acc > best[2]:
                best = (strategy, layer, acc)
    return best


def run(name: str, input_size: int | None, epochs: int | None, probe: bool) -> dict:
    folder = SHARED / name
    params = Params()
    backbone = create_backbone(params.model.name)
    assessment = assess_folder(folder, params, sample=1000)
    train_params = params.train.model_copy(update={"input_size": input_size, "epochs": epochs})
    decision = choose_strategy(assessment.profile, DecideParams(strategy="finetune"), train_params)
    intake = prepare_dataset(params.prepare.model_copy(update={"source": folder}))
    train = [r for r in intake.records if r.split == "train"]
    val = [r for r in intake.records if r.split == "val"]
    codes = None  # at another resolution the Finetuner computes the codes for its LP-FT head
    if input_size is None:
        items = [(r.path, r.sha256) for r in train]
        codes = extract_features(backbone, items, params.extract).arrays[PRE_LOGITS]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        tuner = Finetuner(
            backbone,
            decision.train,
            frozen_layers=decision.frozen_layers,
            checkpoint_dir=Path(ckpt),
        ).fit(
            [r.path for r in train],
            [r.label for r in train],
            [r.path for r in val],
            [r.label for r in val],
            codes=codes,
        )
    seconds = time.perf_counter() - start
    result = tuner.result_
    entry = {
        "dataset": name,
        "input_size": input_size or backbone.data_config.input_size[1],
        "epochs_planned": decision.train.epochs,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "val_accuracy": result.best_val_accuracy,
        "frozen": tuner.frozen_patterns(),
        "lr_ratio": decision.train.lr_ratio,
        "seconds": seconds,
        "train_images_per_s": float(np.median([h.images_per_s for h in result.history])),
        "history": [vars(h) for h in result.history],
    }
    if probe:
        probes = sorted(assessment.profile.probes, key=lambda p: -p.cv_accuracy)
        layers = list(dict.fromkeys([probes[0].layer, PRE_LOGITS]))  # the CV-best layer + codes
        strategy, layer, acc = best_probe(params, folder, backbone, layers)
        entry["best_probe"] = {"strategy": strategy, "layer": layer, "val_accuracy": acc}
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
