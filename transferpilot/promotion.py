"""Champion and challenger: is the new model good enough to replace the one in service?

Both models are scored on the same frozen evaluation images (matched by content, the
images' SHA-256), and a paired bootstrap over those images gives the difference in
accuracy, challenger minus champion, with its interval (SciPy's ``bootstrap``,
``paired=True``). The challenger is promoted unless it is worse by more than the margin:
``difference >= -margin``; the interval is reported beside the verdict, not used in it (on
a few hundred images it is several points wide, and a non-inferiority bound that tight
would keep every champion forever).

A second check guards what accuracy cannot see on a small holdout: the training images
that arrived since the champion. When the run's label-issue search (confident learning)
flags them far more often than the images the champion was trained on, the batch looks
mislabelled and the challenger is held back (:func:`label_check`).

>>> compare({"a1": True, "b2": False}, {"a1": True, "b2": True}, margin=0.005)  # doctest: +SKIP
Comparison(images=2, ..., promoted=False, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from transferpilot.errors import DataError

#: Bootstrap resamples of the paired difference.
RESAMPLES = 2000
#: The interval's confidence level.
LEVEL = 0.95


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the same images (accuracies in 0..1)."""

    images: int
    challenger: float
    champion: float
    difference: float
    low: float
    high: float
    margin: float
    promoted: bool

    def reason(self) -> str:
        """Why the challenger was promoted or not, in a sentence."""
        diff = (
            f"{100 * self.difference:+.1f} points ({100 * self.low:+.1f} to {100 * self.high:+.1f})"
        )
        scores = (
            f"challenger {100 * self.challenger:.1f} % vs champion {100 * self.champion:.1f} % "
            f"on the same {self.images} frozen evaluation images: {diff}"
        )
        if self.promoted:
            return f"promoted: {scores}"
        return f"not promoted, worse by more than the {100 * self.margin:g}-point margin: {scores}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason()}


def paired_difference(
    challenger: np.ndarray, champion: np.ndarray, *, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``challenger - champion`` (per-image 0/1 correctness) and its percentile
    bootstrap interval, resampling images (pairs kept together)."""
    from scipy.stats import bootstrap

    a, b = np.asarray(challenger, float), np.asarray(champion, float)
    diff = float(a.mean() - b.mean())
    if np.all(a == b):  # no image answered differently: the interval is a point
        return diff, diff, diff
    result = bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return diff, float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(
    challenger: Mapping[str, bool], champion: Mapping[str, bool], *, margin: float
) -> Comparison:
    """Compare per-image correctness keyed by image (SHA-256) on the images both have.

    Raises :class:`DataError` when the two share no image.
    """
    shared = sorted(set(challenger) & set(champion))
    if not shared:
        raise DataError(
            "the challenger and the champion share no evaluation image: nothing to compare "
            "them on (was the frozen holdout, holdout.csv, emptied or replaced?)"
        )
    a = np.array([challenger[k] for k in shared], dtype=float)
    b = np.array([champion[k] for k in shared], dtype=float)
    diff, low, high = paired_difference(a, b)
    return Comparison(
        len(shared),
        float(a.mean()),
        float(b.mean()),
        round(diff, 6),
        round(low, 6),
        round(high, 6),
        margin,
        diff >= -margin - 1e-12,
    )


#: The label check's significance level (Fisher's exact test, one-sided).
LABEL_ALPHA = 0.01


@dataclass(frozen=True)
class LabelCheck:
    """How often the run's label-issue search flagged the new training images against those
    the champion was trained on (the same search, the same model: a fair comparison)."""

    new_flagged: int
    new: int
    old_flagged: int
    old: int
    p_value: float
    max_rise: float

    @property
    def new_rate(self) -> float:
        return self.new_flagged / self.new if self.new else 0.0

    @property
    def old_rate(self) -> float:
        return self.old_flagged / self.old if self.old else 0.0

    @property
    def passed(self) -> bool:
        """False when the new images are flagged more often, by more than ``max_rise`` and
        beyond chance (p < :data:`LABEL_ALPHA`)."""
        rise = self.new_rate - self.old_rate
        return not (rise > self.max_rise and self.p_value < LABEL_ALPHA)

    def reason(self) -> str:
        return (
            f"{100 * self.new_rate:.0f} % of the {self.new} new training images look "
            f"mislabelled (label issues), against {100 * self.old_rate:.0f} % of the {self.old} "
            f"the champion was trained on (Fisher p={self.p_value:.2g})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "new_rate": round(self.new_rate, 4),
            "old_rate": round(self.old_rate, 4),
            "passed": self.passed,
            "reason": self.reason(),
        }


def label_check(
    new_flagged: int, new: int, old_flagged: int, old: int, *, max_rise: float
) -> LabelCheck:
    """Fisher's exact test (SciPy) that the new images are flagged more often than the old."""
    from scipy.stats import fisher_exact

    if not new or not old:
        return LabelCheck(new_flagged, new, old_flagged, old, 1.0, max_rise)
    table = [[new_flagged, new - new_flagged], [old_flagged, old - old_flagged]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    return LabelCheck(new_flagged, new, old_flagged, old, p, max_rise)
