"""The size profile and the per-layer probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferpilot.intake import Record
from transferpilot.profile import probe_layers, size_profile, stratified_sample
from transferpilot.profile._probes import ProbeOptions


def rec(label: str, split: str, w: int = 10, h: int = 20, mode: str = "RGB") -> Record:
    return Record(Path(f"{label}.png"), label, split, "0" * 64, w, h, mode, f"{label}.png")


def test_size_profile_counts_training_images() -> None:
    records = [rec("a", "train")] * 6 + [rec("b", "train", mode="L")] * 2 + [rec("a", "val")] * 3
    size = size_profile(records)
    assert (size.n_images, size.n_train, size.n_classes) == (11, 8, 2)
    assert size.images_per_class == {"min": 2, "median": 4, "max": 6}
    assert size.imbalance == 3.0 and size.modes == {"RGB": 9, "L": 2}
    assert size.width["median"] == 10


def test_stratified_sample_keeps_proportions_and_every_class() -> None:
    labels = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10)
    rows = stratified_sample(labels, 100, seed=0)
    picked = labels[rows]
    assert 95 <= len(rows) <= 105
    assert (picked == "a").sum() == 90 and (picked == "b").sum() == 9 and (picked == "c").sum() >= 2
    assert np.array_equal(stratified_sample(labels[:50], 100, 0), np.arange(50))


def test_the_informative_layer_probes_best() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(["x", "y"], 60)
    signal = (y == "x")[:, None] * 3.0 + rng.normal(size=(120, 4))
    features = {"noise": rng.normal(size=(120, 4)), "signal": signal}
    probes = probe_layers(features, y, ["noise", "signal"], ProbeOptions(folds=3))
    scores = {p.layer: p.cv_accuracy for p in probes}
    assert scores["signal"] > 0.9 > 0.75 > scores["noise"]
