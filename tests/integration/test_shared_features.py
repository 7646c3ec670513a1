"""Extraction and both linear strategies on real images from each shared dataset.

A stratified handful per class keeps this to seconds; benchmarks/ runs the full sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferpilot.config import ExtractParams, PrepareParams
from transferpilot.features import extract_features
from transferpilot.intake import prepare_dataset
from transferpilot.strategies import LinearClassifier
from transferpilot.zoo import PRE_LOGITS, Backbone

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.mark.parametrize("name", ["hymenoptera", "brain_tumor_mri", "mnist", "imagenette"])
def test_features_and_classifiers_on_real_images(
    shared_datasets: Path, lite0: Backbone, tmp_path: Path, name: str
) -> None:
    intake = prepare_dataset(PrepareParams(source=shared_datasets / name))
    picked = []
    for split, per_class in (("train", 6), ("val", 3)):
        for label in intake.classes:
            rows = [r for r in intake.records if r.split == split and r.label == label]
            picked += rows[:per_class]
    feats = extract_features(
        lite0,
        [(r.path, r.sha256) for r in picked],
        ExtractParams(cache_dir=tmp_path / "cache", batch_size=16, workers=1),
    )
    assert feats.stats.computed == len(picked)
    X = feats.arrays[PRE_LOGITS]
    assert X.shape == (len(picked), lite0.num_features) and np.isfinite(X).all()
    train = np.array([r.split == "train" for r in picked])
    y = np.array([r.label for r in picked])
    for strategy in ("linear", "svm"):
        probe = LinearClassifier(strategy, c_grid=(0.1, 1.0), cv_folds=3)
        probe.fit(X[train], y[train])
        assert probe.predict(X[~train]).shape == ((~train).sum(),)
        assert (probe.predict(X[train]) == y[train]).mean() > 0.9  # codes separate the classes
