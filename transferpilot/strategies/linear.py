"""The feature strategies: softmax regression (``linear``), a linear SVM (``svm``) and
``baseline``, the RBF-kernel SVM on the raw pixels (no transfer at all), each a
:class:`~transferpilot.estimators.LinearClassifier` on cached features.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import softmax

from transferpilot.balance import IMBALANCED
from transferpilot.calibration import expected_calibration_error
from transferpilot.estimators import KIND_NAMES, LinearClassifier
from transferpilot.layer_names import PIXELS, linear_inputs
from transferpilot.strategies._registry import Context, Defaults, register_strategy

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from transferpilot.decide import Decision
    from transferpilot.features import FeatureTable
    from transferpilot.zoo import Backbone, DataConfig


class FeatureStrategy(Defaults):
    """A :class:`LinearClassifier` on the decided layer's cached features (the seed's
    "fixed feature extractor"); saved as ``head.joblib`` with its checked sidecar."""

    name = ""  # set by register_strategy
    kind = ""  # the LinearClassifier's kind: the strategy's name unless set
    FILE = "head.joblib"
    needs_network = False  # fit, load and predict read the cached features; export builds it

    def __init__(
        self, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> None:
        self.backbone, self.layer, self.settings = backbone, decision.layer, decision.train

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> FeatureStrategy:

        X = linear_inputs(self.layer, table.array(self.layer))
        y = table.labels
        self.estimator_ = est = LinearClassifier.from_settings(
            self.kind or self.name, self.settings
        )
        log.info(
            "%s on %s: %d rows x %d features; C by %d-fold CV over %s, then %s",
            KIND_NAMES[est.kind],
            self.layer,
            int(np.count_nonzero(train) if train.dtype == bool else len(train)),
            X.shape[1],
            est.cv_folds,
            ", ".join(f"{c:g}" for c in est.c_grid),
            "a temperature on out-of-fold scores" if est.calibrate else "no calibration",
        )
        start = time.perf_counter()
        est.fit(X[train], y[train])
        log.info(
            "%s: C=%g, CV accuracy %.3f ± %.3f, temperature %.2f (%.1f s)",
            KIND_NAMES[est.kind],
            est.best_C_,
            est.cv_accuracy_,
            est.cv_std_,
            est.temperature_,
            time.perf_counter() - start,
        )
        self.classes_ = [str(c) for c in self.estimator_.classes_]
        self.pool_grid_ = table.meta.pool_grid
        self.summary_ = {
            "best_C": self.estimator_.best_C_,
            "cv_accuracy": self.estimator_.cv_accuracy_,
            "val_accuracy": float((self.estimator_.predict(X[val]) == y[val]).mean()),
            "temperature": self.estimator_.temperature_,
            **self._calibration(X[val], y[val]),
            **self._balance(),
        }
        return self

    def _balance(self) -> dict[str, Any]:
        """On an imbalanced set: the ratio, the class weight chosen, its CV balanced accuracy."""
        est = self.estimator_
        if est.imbalance_ <= IMBALANCED:
            return {}
        log.info(
            "imbalanced (largest class %.1fx the smallest): rebalanced by %s, CV balanced "
            "accuracy %.3f",
            est.imbalance_,
            est.rebalance_,
            est.cv_balanced_accuracy_,
        )
        return {
            "imbalance": est.imbalance_,
            "rebalance": est.rebalance_,
            "cv_balanced_accuracy": est.cv_balanced_accuracy_,
        }

    def _calibration(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Validation ECE of the softmax of the decision values, and after the temperature."""
        if not len(y):
            return {}
        truth = np.searchsorted(self.estimator_.classes_, y)
        out = {}
        for name, proba in (
            ("val_ece_uncalibrated", softmax(self.estimator_.logits(X), axis=1)),
            ("val_ece", self.estimator_.predict_proba(X)),
        ):
            correct = proba.argmax(1) == truth
            out[name] = expected_calibration_error(proba.max(1), correct)
        return out

    def save(self, directory: Path) -> None:
        from transferpilot.strategies.persist import save_classifier

        save_classifier(
            self.estimator_,
            directory / self.FILE,
            model=self.backbone.spec,
            layer=self.layer,
            classes=self.classes_,
            extra={
                "strategy": self.name,
                "weights_digest": self.backbone.weights_digest,
                "pool_grid": self.pool_grid_,
            },
        )

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> FeatureStrategy:
        from transferpilot.strategies.persist import load_classifier

        strategy = cls(backbone, decision)
        strategy.estimator_, meta = load_classifier(
            directory / cls.FILE, model=backbone.spec, layer=strategy.layer
        )
        strategy.classes_ = list(meta["classes"])
        strategy.pool_grid_ = int(meta.get("pool_grid", 1))
        return strategy

    def out_of_fold_proba(self) -> np.ndarray | None:
        return self.estimator_.out_of_fold_proba()

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:

        X = linear_inputs(self.layer, table.array(self.layer))
        return self.estimator_.predict_proba(X[rows])

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        from transferpilot.heads import FeatureClassifier, head_module  # defers torch

        config = self.backbone.data_config
        module = FeatureClassifier(
            None if self.layer == PIXELS else self.backbone.features,  # no network to build
            self.layer,
            head_module(self.estimator_),
            config,
            pool_grid=self.pool_grid_,
        )
        return module, config


@register_strategy("linear")
class SoftmaxRegression(FeatureStrategy):
    """Softmax (multinomial logistic) regression on a layer's features, usually the CNN codes."""


@register_strategy("svm")
class LinearSVM(FeatureStrategy):
    probability_note = (
        "The SVM's probabilities are a softmax of its margins, not calibrated: read its "
        "ECE and confidences as a ranking, not as probabilities."
    )

    """Linear SVM (one-vs-rest, squared hinge) on a chosen layer's features."""


@register_strategy("ncm")
class NearestClassMean(FeatureStrategy):
    """SimpleShot (Wang et al. 2019): each class's mean of the centred, unit-length CNN
    codes; an image goes to the nearest. Nothing to tune, so it holds up where a class has
    a handful of images."""

    kind = "ncm"


@register_strategy("baseline")
class PixelBaseline(FeatureStrategy):
    """No transfer: an RBF-kernel SVM on the raw pixels (the network's input pooled to
    16 x 16). What every transfer strategy is measured against; shipped when it wins."""

    kind = "kernel"

    def __init__(
        self, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> None:

        super().__init__(backbone, decision, context)
        self.layer = PIXELS
