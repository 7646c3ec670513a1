"""Transferability per layer: cross-validated accuracy of a linear classifier on each layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The linear strategies, which are also the probes' kinds.
LINEAR_KINDS = ("linear", "svm")
#: The no-transfer baseline's probes on the raw pixels: (kind, strategy).
BASELINE_KINDS = (("linear", "linear"), ("kernel", "baseline"))


@dataclass(frozen=True)
class LayerProbe:
    """One layer's probe: a ``kind`` classifier's cross-validated accuracy at its best C,
    and the standard deviation of that accuracy over the ``folds`` folds. Kind
    ``pretrained`` is the ImageNet head as it is: its accuracy on every training image,
    nothing fitted, and the binomial standard error (``folds`` 1)."""

    layer: str
    dim: int
    cv_accuracy: float
    best_c: float
    images: int
    kind: str = "svm"
    cv_std: float = 0.0
    folds: int = 0

    @property
    def strategy(self) -> str:
        """The strategy that trains this probe's classifier on its layer."""
        return "baseline" if self.kind == "kernel" else self.kind

    @property
    def standard_error(self) -> float:
        """Of the CV accuracy: the spread over folds / sqrt(folds)."""
        return self.cv_std / max(1, self.folds) ** 0.5


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


def held_in_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows, per class (none of a class with
    fewer than 3 rows: at least 2 stay to train on), for selecting on held-in data."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) >= 3:
            take = min(len(rows) - 2, max(1, round(fraction * len(rows))))
            mask[rng.choice(rows, size=take, replace=False)] = True
    return mask
