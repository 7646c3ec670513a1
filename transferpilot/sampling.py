"""Which rows to use: a class-balanced sample and a held-in split, seeded.

Profile's probes, decide's fine-tuning trials and the fine-tuning loop all draw their rows
here, so a sample means the same thing at each step (and fine-tuning needs nothing of
:mod:`transferpilot.profile`)."""

from __future__ import annotations

import numpy as np


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
