"""A linear model's decision values as logits: numpy only, so that both the scikit-learn
heads (:mod:`transferpilot.strategies.linear`) and their tensor form
(:mod:`transferpilot.heads`) read a binary model's one margin the same way."""

from __future__ import annotations

import numpy as np


def as_logits(margins: np.ndarray, kind: str) -> np.ndarray:
    """Decision values as (N, classes) logits whose softmax is the model's probability:
    a binary model's one margin ``m`` becomes ``(-m/2, m/2)`` for logistic regression
    (the sigmoid), ``(-m, m)`` for the SVMs."""
    margins = np.asarray(margins, dtype=np.float64)
    if margins.ndim == 1:
        half = binary_half(kind)
        margins = np.stack([-half * margins, half * margins], axis=1)
    return margins


def binary_half(kind: str) -> float:
    """The factor of a binary model's margin in each of its two logits (see :func:`as_logits`)."""
    return 0.5 if kind == "linear" else 1.0
