"""Transferability per layer: cross-validated accuracy of a linear probe on each layer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from transferpilot.config import ProfileParams
from transferpilot.features import linear_inputs
from transferpilot.strategies import LinearProbe


@dataclass(frozen=True)
class ProbeOptions:
    """How layers are probed: a linear SVM, C by CV over a small grid, on a capped sample."""

    kind: str = "svm"
    c_grid: tuple[float, ...] = (0.001, 0.01, 0.1)
    folds: int = 3
    max_images: int = 2000
    seed: int = 0


def probe_options(cfg: ProfileParams, seed: int = 0) -> ProbeOptions:
    """The layer probes that the ``profile`` section of params.yaml asks for."""
    return ProbeOptions(
        cfg.probe, tuple(cfg.probe_c_grid), cfg.probe_folds, cfg.probe_max_images, seed
    )


@dataclass(frozen=True)
class LayerProbe:
    """One layer's probe result."""

    layer: str
    dim: int
    cv_accuracy: float
    best_c: float
    images: int
    seconds: float


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


def probe_layers(
    features: Mapping[str, np.ndarray],
    labels: Sequence[str],
    layers: Sequence[str],
    opts: ProbeOptions = ProbeOptions(),
) -> list[LayerProbe]:
    """CV accuracy of a linear probe on each of ``layers`` (training rows only, please)."""
    y = np.asarray(labels)
    rows = stratified_sample(y, opts.max_images, opts.seed)
    results = []
    for layer in layers:
        start = time.perf_counter()
        X = linear_inputs(layer, np.asarray(features[layer])[rows])
        probe = LinearProbe(
            opts.kind, opts.c_grid, opts.folds, max_iter=2000, random_state=opts.seed, n_jobs=-1
        ).fit(X, y[rows])
        results.append(
            LayerProbe(
                layer,
                X.shape[1],
                probe.cv_accuracy_,
                probe.best_C_,
                len(rows),
                round(time.perf_counter() - start, 3),
            )
        )
    return results
