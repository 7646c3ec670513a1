"""Classification metrics from labels and predicted probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferpilot.calibration import expected_calibration_error


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split. ``summary`` is flat (what ``dvc metrics show`` lists)."""

    summary: dict[str, float | int]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    classes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def confusion_normalised(self) -> list[list[float]]:
        """Rows (true classes) scaled to sum to 1: each row's recall distribution."""
        counts = np.asarray(self.confusion, dtype=np.float64)
        rows = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0).tolist()


def top_k_accuracy(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Share of rows whose true class index is among the ``k`` highest probabilities."""
    if len(y) == 0:
        return float("nan")
    k = min(k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y)[:, None]).any(axis=1).mean())


#: The confidence of the intervals the report gives.
LEVEL = 0.95
_Z = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(correct: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``LEVEL``): honest at small ``n`` and
    at 0 or 1, where the normal approximation collapses to a point."""
    if n == 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
    half = _Z * np.sqrt(p * (1 - p) / n + _Z**2 / (4 * n * n)) / (1 + _Z**2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def balanced_interval(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """An interval (``LEVEL``) of balanced accuracy, the mean of the per-class recalls:
    centred on it, its spread from each class's recall as Agresti and Coull adjust it
    (two right and two wrong answers added), so that a class whose every image is right
    (or wrong) still counts as uncertain, more so the fewer images it has."""
    classes = np.unique(y)
    if len(classes) == 0:
        return float("nan"), float("nan")
    recalls, variances = [], []
    for c in classes:
        rows = y == c
        n, hits = int(rows.sum()), int((pred[rows] == c).sum())
        adjusted = (hits + 2) / (n + 4)
        recalls.append(hits / n)
        variances.append(adjusted * (1 - adjusted) / n)
    centre = float(np.mean(recalls))
    half = _Z * float(np.sqrt(np.sum(variances))) / len(classes)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_predictions(
    labels: Sequence[str], proba: np.ndarray, classes: Sequence[str], *, ece_bins: int = 15
) -> Evaluation:
    """Every metric for one split: true ``labels``, ``proba`` (N, classes) in ``classes`` order.

    >>> e = evaluate_predictions(["a", "b"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["a", "b"])
    >>> e.summary["accuracy"], e.confusion
    (1.0, [[1, 0], [0, 1]])
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    from sklearn.metrics import precision_recall_fscore_support as prfs

    classes = [str(c) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(lb) for lb in labels} - set(index))
    if unknown:
        raise ValueError(f"labels not among the model's classes: {unknown}")
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (len(labels), len(classes)):
        raise ValueError(
            f"probabilities of shape {proba.shape}, expected {(len(labels), len(classes))}"
        )
    y = np.array([index[str(lb)] for lb in labels], dtype=np.int64)
    pred = proba.argmax(axis=1) if len(y) else np.zeros(0, np.int64)
    ids = list(range(len(classes)))
    precision, recall, f1, support = prfs(y, pred, labels=ids, zero_division=0)
    present = support > 0  # macro averages over the classes this split has
    k = min(5, len(classes))
    confidence = proba.max(axis=1) if len(y) else np.zeros(0)
    summary: dict[str, float | int] = {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(y) else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        f"top{k}_accuracy": top_k_accuracy(y, proba, k),
        "ece": expected_calibration_error(confidence, pred == y, ece_bins),
        "mean_confidence": float(confidence.mean()) if len(y) else float("nan"),
        "images": len(y),
    }
    low, high = wilson(int((pred == y).sum()), len(y))
    summary |= {"accuracy_low": low, "accuracy_high": high}
    low, high = balanced_interval(y, pred)
    summary |= {"balanced_accuracy_low": low, "balanced_accuracy_high": high}
    per_class = [
        {
            "class": c,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    ]
    confusion = confusion_matrix(y, pred, labels=ids).astype(int).tolist()
    return Evaluation(summary, per_class, confusion, classes, {"top_k": k, "ece_bins": ece_bins})
