"""The size profile and the per-layer probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferpilot.config import ProfileParams
from transferpilot.intake import Record
from transferpilot.profile import size_profile, stratified_sample
from transferpilot.profile.build import probe_layers


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
    features["more"] = signal + rng.normal(size=(120, 4))
    settings = ProfileParams(probe_folds=3, cache_dir=None)
    probes = probe_layers(features, y, ["noise", "signal", "more"], settings)
    # every layer with the SVM, in order; the best two and three side by side (in layer
    # order); then softmax regression on the two best single layers
    assert [(p.kind, p.layer) for p in probes] == [
        ("svm", "noise"),
        ("svm", "signal"),
        ("svm", "more"),
        ("svm", "signal+more"),
        ("svm", "noise+signal+more"),
        ("linear", "signal"),
        ("linear", "more"),
    ]
    assert next(p.dim for p in probes if p.layer == "signal+more") == 8
    scores = {p.layer: p.cv_accuracy for p in probes if p.kind == "svm"}
    assert scores["signal"] > 0.9 > 0.75 > scores["noise"]


def test_probe_results_are_kept_by_content_and_reused(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferpilot.strategies import LinearClassifier

    rng = np.random.default_rng(1)
    y = np.repeat(["x", "y"], 30)
    features = {"a": rng.normal(size=(60, 3)), "b": (y == "x")[:, None] + rng.normal(size=(60, 3))}
    settings = ProfileParams(probe_folds=2, cache_dir=tmp_path)
    first = probe_layers(features, y, ["a", "b"], settings)
    fits = []
    real_fit = LinearClassifier.fit
    monkeypatch.setattr(LinearClassifier, "fit", lambda *a: fits.append(1) or real_fit(*a))
    assert probe_layers(features, y, ["a", "b"], settings) == first and not fits  # all kept
    renamed = probe_layers({"c": features["a"], "b": features["b"]}, y, ["c", "b"], settings)
    assert renamed[0].layer == "c" and not fits  # the same features under another name
    probe_layers(features, y, ["a", "b"], settings.model_copy(update={"probe_tol": 1e-3}))
    assert fits  # other settings: probed again
    features["a"] = features["a"] + 1e-3
    fits.clear()
    probe_layers(features, y, ["a"], settings.model_copy(update={"probe_second_opinion": 0}))
    assert len(fits) == 1  # changed features: probed again


def test_throughput_is_measured_at_the_requested_resolution() -> None:
    import torch

    from transferpilot.profile import measure_throughput
    from transferpilot.zoo import create_backbone

    backbone = create_backbone("timm:test_efficientnet", pretrained=False)
    small = measure_throughput(backbone, torch.device("cpu"), batch_size=4, input_size=32)
    assert small.input_size == 32 and small.train_images_per_s > 0
    assert backbone.data_config.input_size[1] == 160
    assert measure_throughput(backbone, torch.device("cpu"), batch_size=4).input_size == 160
    digits = size_profile([rec("a", "train", 28, 28)] * 2)  # 28-px images are timed at 64 px
    timed = measure_throughput(backbone, torch.device("cpu"), batch_size=4, images=digits)
    assert timed.input_size == 64


def test_training_size_is_the_models_unless_images_are_small() -> None:
    from transferpilot.profile import training_size

    assert training_size(size_profile([rec("a", "train", 28, 28)] * 2), 224) == 64
    assert training_size(size_profile([rec("a", "train", 500, 375)] * 2), 224) == 224


def test_the_held_in_split_takes_a_share_of_every_class_and_leaves_two_to_train() -> None:
    from transferpilot.profile import held_in_split

    labels = np.array(["a"] * 40 + ["b"] * 10 + ["c"] * 3 + ["d"] * 2)
    mask = held_in_split(labels, 0.15, seed=0)
    counts = {c: int(mask[labels == c].sum()) for c in "abcd"}
    assert counts == {"a": 6, "b": 2, "c": 1, "d": 0}
    np.testing.assert_array_equal(mask, held_in_split(labels, 0.15, seed=0))  # seeded
