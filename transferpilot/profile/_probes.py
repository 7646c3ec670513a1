"""Transferability per layer: cross-validated accuracy of a linear classifier on each layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The linear strategies, which are also the probes' kinds.
LINEAR_KINDS = ("linear", "svm")


@dataclass(frozen=True)
class LayerProbe:
    """One layer's probe: a ``kind`` classifier's cross-validated accuracy at its best C."""

    layer: str
    dim: int
    cv_accuracy: float
    best_c: float
    images: int
    kind: str = "svm"


def stratified_sample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices of at most ``limit`` rows, class proportions kept (at least 2 per class)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = max(2, round(limit * len(rows) / len(labels)))
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))
