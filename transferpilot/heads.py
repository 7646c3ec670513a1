"""Heads as tensors, and the networks that carry them to an exported predictor.

A fitted scikit-learn head (standardiser + linear model, or a Nyström map then one) is
folded into ``nn.Linear`` modules whose softmax is its ``predict_proba``;
:class:`FeatureClassifier` puts one after the pretrained features it was trained on,
:class:`NetworkClassifier` wraps a whole fine-tuned network. The strategies build these
modules and :mod:`transferpilot.export` writes them as ONNX: this module sits below both
(it imports neither).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from transferpilot.features import pixel_codes, pool
from transferpilot.layer_names import PIXELS, parts
from transferpilot.margins import binary_half
from transferpilot.zoo import LOGITS, DataConfig


def linear_layer(estimator: Any) -> nn.Linear:
    """A fitted :class:`~transferpilot.strategies.LinearClassifier` as one ``nn.Linear``.

    The standardiser is folded in (``W / scale``, ``b - W @ (mean / scale)``), so
    ``softmax(layer(x))`` equals the probe's ``predict_proba(x)``: the softmax of
    its decision values over the fitted temperature (folded in as ``W / T``), plus its
    prior shift where it has one (folded into the bias). Binary
    models have one row of weights; it becomes two rows (``±w/2`` for logistic,
    ``±w`` for the SVM), as their ``predict_proba`` reads the margin.
    """
    scaler = estimator.model_.named_steps["scale"]
    mean = np.asarray(scaler.mean_ if scaler.with_mean else 0.0, dtype=np.float64)
    scale = np.asarray(scaler.scale_ if scaler.with_std else 1.0, dtype=np.float64)
    return _linear(estimator, mean, scale)


def _linear(estimator: Any, mean: Any = 0.0, scale: Any = 1.0) -> nn.Linear:
    clf = estimator.model_.named_steps["clf"]
    coef = np.asarray(clf.coef_, dtype=np.float64)
    bias = np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)
    temperature = float(getattr(estimator, "temperature_", 1.0))
    weight = coef / scale / temperature
    bias = (bias - (coef / scale * mean).sum(axis=1)) / temperature
    if weight.shape[0] == 1:
        half = binary_half(estimator.kind)
        weight = np.vstack([-half * weight, half * weight])
        bias = np.array([-half * bias[0], half * bias[0]])
    shift = getattr(estimator, "prior_shift_", None)
    if shift is not None:  # balanced for an imbalanced set: less the log of each class's share
        bias = bias + np.asarray(shift, dtype=np.float64)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


class NystroemMap(nn.Module):
    """scikit-learn's :class:`~sklearn.kernel_approximation.Nystroem` (RBF) as tensors:
    ``exp(-gamma * |x - c|^2) @ normalization.T``."""

    def __init__(self, nystroem: Any) -> None:
        super().__init__()
        for name, value in (
            ("components", nystroem.components_),
            ("normalization", nystroem.normalization_.T),
        ):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32))
        self.gamma = float(nystroem.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.components
        sq = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)
        return torch.exp(-self.gamma * sq.clamp_min(0)) @ self.normalization


class CenteredL2Map(nn.Module):
    """:class:`~transferpilot.estimators.CenteredL2` as tensors: less the mean, unit length."""

    def __init__(self, normalise: Any) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(normalise.mean_, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean
        return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def head_module(estimator: Any) -> nn.Module:
    """A fitted :class:`~transferpilot.strategies.LinearClassifier` as a module whose
    softmax is its ``predict_proba``: one ``nn.Linear``, after the Nyström map for
    ``kernel`` or the centring and unit length for ``ncm``."""
    steps = estimator.model_.named_steps
    if "map" in steps:
        return nn.Sequential(NystroemMap(steps["map"]), _linear(estimator))
    if "normalise" in steps:
        return nn.Sequential(CenteredL2Map(steps["normalise"]), _linear(estimator))
    return linear_layer(estimator)


class _Normalise(nn.Module):
    def __init__(self, data_config: DataConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(data_config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_config.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureClassifier(nn.Module):
    """Pretrained features at one layer, pooled as in extraction, then a head (or the
    raw pixels, for the no-transfer baseline)."""

    def __init__(
        self,
        features: nn.Module | None,
        layer: str,
        head: nn.Linear,
        data_config: DataConfig,
        pool_grid: int = 1,
    ) -> None:
        super().__init__()
        self.normalise = _Normalise(data_config)
        self.features, self.layer, self.head, self.pool_grid = features, layer, head, pool_grid

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).softmax(-1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The head's scores before the softmax (what an explanation attributes)."""
        x = self.normalise(image)
        if self.layer == PIXELS:  # no transfer: the pretrained network is not in the graph
            return self.head(pixel_codes(x))
        outputs = self.features(x)
        pooled = [pool(outputs[part], self.pool_grid) for part in parts(self.layer)]
        x = pooled[0] if len(pooled) == 1 else torch.cat(pooled, 1)  # a joined input
        if self.layer == LOGITS:  # the linear model reads log-probabilities (linear_inputs)
            x = x.log_softmax(-1)
        return self.head(x)


class NetworkClassifier(nn.Module):
    """A whole (fine-tuned) classifier: normalise, run, softmax."""

    def __init__(self, model: nn.Module, data_config: DataConfig) -> None:
        super().__init__()
        self.normalise = _Normalise(data_config)
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).softmax(-1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The network's scores before the softmax (what an explanation attributes)."""
        return self.model(self.normalise(image))
