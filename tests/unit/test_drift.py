"""Drift on embeddings: BBSD and MMD keep their false-positive rate and see a moved sample;
new classes are drift, a label shift is reported beside it."""

from __future__ import annotations

import numpy as np

from transferpilot.drift import detect


def sample(rng: np.random.Generator, n: int, shift: float = 0.0, classes: int = 3):
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 16)) + 3 * np.eye(classes, 16)[y] + shift
    return x, [str(v) for v in y]


def test_resamples_of_one_distribution_are_rarely_flagged() -> None:
    rng = np.random.default_rng(0)
    flagged = 0
    for seed in range(20):
        ref, ref_y = sample(rng, 150)
        new, new_y = sample(rng, 100)
        flagged += detect(ref, new, ref_y, new_y, permutations=200, seed=seed).drift
    assert flagged <= 3  # alpha 0.05: one in twenty expected


def test_a_shifted_sample_is_flagged_by_both_tests() -> None:
    rng = np.random.default_rng(1)
    ref, ref_y = sample(rng, 200)
    new, new_y = sample(rng, 100, shift=0.6)
    report = detect(ref, new, ref_y, new_y, permutations=200)
    assert report.drift and report.tests["mmd"].detected
    assert report.summary().startswith("drift in 100 new images: the new images differ")
    assert report.as_dict()["tests"]["mmd"]["p_value"] < 0.025


def test_new_classes_are_drift_and_a_label_shift_is_reported_beside_it() -> None:
    rng = np.random.default_rng(2)
    ref, ref_y = sample(rng, 200)
    new, _ = sample(rng, 60)
    report = detect(ref, new, ref_y, ["0"] * 50 + ["zebra"] * 10, permutations=100)
    assert report.drift and report.new_classes == ["zebra"]
    assert report.label_shift and "class balance moved" in report.summary()


def test_no_new_images_is_no_drift() -> None:
    rng = np.random.default_rng(3)
    ref, ref_y = sample(rng, 50)
    report = detect(ref, ref[:0], ref_y, [])
    assert not report.drift and report.summary() == "no new images since the champion was trained"
