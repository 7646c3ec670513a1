"""Class imbalance: when a set counts as imbalanced, and by how much. NumPy only.

Where the largest class has more than :data:`IMBALANCED` times the images of the
smallest, the heads also try class-weighted fitting, chosen by cross-validated balanced
accuracy (:class:`~transferpilot.estimators.LinearClassifier`), and the report leads with
balanced accuracy and macro-F1: plain accuracy rewards answering the largest class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The largest class over the smallest above which a set is imbalanced.
IMBALANCED = 3.0


def imbalance(labels: Sequence[str] | np.ndarray) -> float:
    """The largest class's rows over the smallest's (1.0 for no rows)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def is_imbalanced(labels: Sequence[str] | np.ndarray) -> bool:
    return imbalance(labels) > IMBALANCED
