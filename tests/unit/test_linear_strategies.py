"""Linear classifiers on features: estimators that choose C by CV, saved with a checked sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from transferpilot.errors import ConfigError, ModelError
from transferpilot.strategies import (
    LinearClassifier,
    get_strategy,
    list_strategies,
    load_classifier,
    save_classifier,
)


def blobs(n_per_class: int = 30, classes: int = 3, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(classes, dim))
    X = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centers])
    y = np.repeat([f"class{i}" for i in range(classes)], n_per_class)
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", ["linear", "svm"])
def test_strategies_learn_separable_data(name: str) -> None:
    X, y = blobs()
    probe = LinearClassifier(name, c_grid=(0.01, 1.0), cv_folds=3)
    assert probe.fit(X, y) is probe
    assert (probe.predict(X) == y).mean() > 0.95
    assert probe.best_C_ in (0.01, 1.0) and 0.9 < probe.cv_accuracy_ <= 1.0
    proba = probe.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (probe.classes_[proba.argmax(1)] == probe.predict(X)).all()
    assert [row["C"] for row in probe.cv_table()] == [0.01, 1.0]


def test_the_nearest_class_mean_is_simpleshot_and_a_linear_model_after_cl2n() -> None:
    """Centre on the training mean, scale rows to unit length, answer the nearest class
    mean: computed by hand here, and equal to the head's answers and its linear form."""
    X, y = blobs(classes=3, n_per_class=5)
    head = LinearClassifier("ncm", c_grid=(1.0,), cv_folds=5).fit(X, y)
    assert head.cv_folds_ == 5 and head.cv_table()[0]["C"] == 1.0
    Z = X - X.mean(0)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    means = np.stack([Z[y == c].mean(0) for c in head.classes_])
    nearest = head.classes_[((Z[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (head.predict(X) == nearest).all()
    assert (head.classes_[head.predict_proba(X).argmax(1)] == nearest).all()


def test_binary_svm_probabilities_have_two_columns() -> None:
    X, y = blobs(classes=2)
    proba = LinearClassifier("svm", c_grid=(1.0,), cv_folds=2).fit(X, y).predict_proba(X)
    assert proba.shape == (len(X), 2)


def test_folds_shrink_to_the_smallest_class() -> None:
    X, y = blobs(n_per_class=3)
    probe = LinearClassifier(cv_folds=5).fit(X, y)
    assert probe.cv_folds_ == 3


def test_it_is_an_ordinary_estimator() -> None:
    probe = LinearClassifier("svm", c_grid=(0.5,), cv_folds=2)
    copy = clone(probe)
    assert copy.get_params() == probe.get_params() and not hasattr(copy, "model_")


def test_every_strategy_is_registered_and_an_unknown_one_lists_them() -> None:
    assert list_strategies() == ["baseline", "finetune", "linear", "ncm", "pretrained", "svm"]
    assert all(get_strategy(name).name == name for name in list_strategies())
    with pytest.raises(ConfigError, match="finetune, linear, svm, ncm, baseline, pretrained"):
        get_strategy("random_forest")


def test_save_load_round_trip_and_the_sidecar_checks(tmp_path: Path) -> None:
    X, y = blobs()
    probe = LinearClassifier(c_grid=(1.0,), cv_folds=2).fit(X, y)
    path = tmp_path / "head.joblib"
    meta = save_classifier(
        probe, path, model="efficientnet_lite0", layer="pre_logits", classes=list(probe.classes_)
    )
    assert meta["versions"]["scikit-learn"] and len(meta["sha256"]) == 64

    loaded, meta2 = load_classifier(path, model="efficientnet_lite0", layer="pre_logits")
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    assert meta2 == meta

    with pytest.raises(ModelError, match="not timm:resnet50"):
        load_classifier(path, model="timm:resnet50")
    with pytest.raises(ModelError, match=r"not blocks\.4"):
        load_classifier(path, layer="blocks.4")

    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["versions"]["scikit-learn"] = "0.0.1"
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=r"scikit-learn 0\.0\.1"):
        load_classifier(path)

    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ModelError, match="does not match its sidecar"):
        load_classifier(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="no readable sidecar"):
        load_classifier(path)


def test_an_imbalanced_set_also_tries_class_weights_chosen_by_balanced_accuracy() -> None:
    """10:1 and overlapping: unweighted fits favour the large class; the weighted fit
    cross-validates better in balanced accuracy and is the one kept."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 4)), rng.normal(1.2, 1, (20, 4))]).astype(np.float32)
    y = np.array(["common"] * 200 + ["rare"] * 20)
    head = LinearClassifier("linear", c_grid=(0.01, 1.0), cv_folds=5, balance=True).fit(X, y)
    tried = {(row["C"], row.get("class_weight")) for row in head.cv_scores_}
    assert tried == {(0.01, None), (1.0, None), (0.01, "balanced"), (1.0, "balanced")}
    assert head.imbalance_ == 10.0 and head.rebalance_ in ("class weights", "prior shift")
    best_plain = max(r["balanced_accuracy"] for r in head.cv_scores_ if "class_weight" not in r)
    assert head.cv_balanced_accuracy_ > best_plain + 0.05
    assert (head.predict(X[200:]) == "rare").mean() > 0.6  # the rare class is answered
    assert (head.predict(X) == head.classes_[head.predict_proba(X).argmax(1)]).all()

    probe = LinearClassifier("linear", c_grid=(0.01, 1.0), cv_folds=5).fit(X, y)  # a probe
    assert probe.rebalance_ == "none" and all("class_weight" not in r for r in probe.cv_scores_)
    even = LinearClassifier("linear", c_grid=(1.0,), balance=True).fit(X[180:], y[180:])  # 20:20
    assert even.rebalance_ == "none" and len(even.cv_scores_) == 1
