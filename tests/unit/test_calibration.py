"""Temperature scaling: fitted on held-in rows, it makes an SVM's scores read as probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from transferpilot.calibration import expected_calibration_error, fit_temperature
from transferpilot.strategies import LinearClassifier


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(4000, 5))
    p = np.exp(logits / 2.5)
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


def test_an_svm_is_calibrated_on_held_in_rows_and_its_error_drops() -> None:
    """Ten classes: the softmax of raw SVM margins (all within about ±1) is underconfident."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 200)
    X = rng.normal(size=(len(y), 20)) + np.eye(10, 20)[y] * 3.0
    train, val = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    svm = LinearClassifier("svm", c_grid=(0.01, 0.1), cv_folds=3).fit(X[train], y[train])
    raw = LinearClassifier("svm", c_grid=(0.01, 0.1), cv_folds=3, calibrate=False)
    raw.fit(X[train], y[train])
    assert raw.temperature_ == 1.0 and svm.temperature_ != 1.0

    def ece(model: LinearClassifier) -> float:
        proba = model.predict_proba(X[val])
        return expected_calibration_error(proba.max(1), proba.argmax(1) == y[val])

    assert ece(raw) > 0.3 and ece(svm) < 0.1
    # the ranking is the SVM's own: calibration changes confidence, never the answer
    np.testing.assert_array_equal(svm.predict(X[val]), raw.predict(X[val]))
