"""Has the data moved? Two-sample tests between a model's training images and those since.

The tests work on what the pipeline already has, the cached embeddings (``pre_logits``):

* **BBSD** (black-box shift detection, Lipton et al. 2018; the detector Rabanser et al.
  2019 found strongest): a softmax classifier trained on the reference images scores
  both samples, and a Kolmogorov-Smirnov test compares each class's score, Bonferroni
  corrected over the classes. The classifier is cross-fitted: each fold's model scores
  its held-out reference images and a share of the new ones, so both samples are scored
  alike, as images the model never saw.
* **MMD**: the maximum mean discrepancy with a Gaussian kernel (median-distance
  bandwidth) on the embeddings, its p-value from a permutation test.
* **label shift**: a chi-square test of the class counts (labels the folder gives);
  **new classes**: labels the reference never had.

Covariate drift is flagged when BBSD or MMD rejects at ``alpha / 2`` (Bonferroni over the
two), so the whole check keeps its false-positive rate at most ``alpha``; new classes are
flagged as drift too; a label shift is reported beside it.

alibi-detect has both detectors but pins NumPy < 2 and Pillow < 11 (0.13.0), which the
rest of the stack cannot go back to; SciPy (a maintained library) gives the tests here:
``ks_2samp``, ``permutation_test`` and ``chi2_contingency``.

>>> report = detect(ref_codes, new_codes, ref_labels, new_labels)  # doctest: +SKIP
>>> report.drift, report.tests["mmd"].p_value  # doctest: +SKIP
(True, 0.002)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: The whole check's false-positive rate (covariate tests at half of it each).
ALPHA = 0.05
#: Images of each sample the tests use at most (a seeded random subset beyond).
MAX_IMAGES = 1000
#: Permutations of the MMD test.
PERMUTATIONS = 500


@dataclass(frozen=True)
class TestResult:
    """One two-sample test: its statistic, p-value and verdict at ``level``."""

    statistic: float
    p_value: float
    level: float
    detected: bool

    @classmethod
    def at(cls, statistic: float, p_value: float, level: float) -> TestResult:
        p = float(min(1.0, max(0.0, p_value)))
        return cls(round(float(statistic), 6), p, level, p < level)


@dataclass(frozen=True)
class DriftReport:
    """The verdict, its tests, and the classes the reference never had."""

    reference: int
    new: int
    tests: dict[str, TestResult]
    new_classes: list[str] = field(default_factory=list)
    alpha: float = ALPHA

    @property
    def covariate(self) -> bool:
        return any(self.tests[t].detected for t in ("bbsd", "mmd") if t in self.tests)

    @property
    def label_shift(self) -> bool:
        return "labels" in self.tests and self.tests["labels"].detected

    @property
    def drift(self) -> bool:
        """Images unlike the reference, or classes it never had."""
        return self.covariate or bool(self.new_classes)

    def summary(self) -> str:
        """One line for a log, a report or a flow run's state."""
        if not self.new:
            return "no new images since the champion was trained"
        found = []
        if self.covariate:
            p = {t: self.tests[t].p_value for t in ("bbsd", "mmd") if t in self.tests}
            found.append(
                "the new images differ from the training images ("
                + ", ".join(f"{t.upper()} p={v:.3g}" for t, v in p.items())
                + ")"
            )
        if self.new_classes:
            found.append("classes never trained on: " + ", ".join(self.new_classes))
        if self.label_shift:
            found.append(f"class balance moved (chi-square p={self.tests['labels'].p_value:.3g})")
        verdict = "drift" if self.drift else "no drift"
        return f"{verdict} in {self.new} new images: " + ("; ".join(found) or "nothing moved")

    def as_dict(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "covariate": self.covariate,
            "label_shift": self.label_shift,
            "reference": self.reference,
            "new": self.new,
            "alpha": self.alpha,
            "new_classes": self.new_classes,
            "tests": {k: asdict(v) for k, v in self.tests.items()},
            "summary": self.summary(),
        }


def _subset(x: np.ndarray, rng: np.random.Generator, cap: int) -> np.ndarray:
    return x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]


def softmax_scores(
    ref: np.ndarray, ref_labels: Sequence[str], new: np.ndarray, *, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(reference scores, new scores)`` of softmax regressions trained on the reference,
    cross-fitted: each fold's model scores its held-out reference images and an equal share
    of the new images, so both samples are scored alike (a model fit on all of the
    reference would be surer of the new images than the folds are of theirs)."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(ref_labels)
    classes = np.unique(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    k = max(2, min(folds, min(Counter(labels.tolist()).values())))
    ref_scores = np.zeros((len(ref), len(classes)))
    new_scores = np.zeros((len(new), len(classes)))
    share = np.random.default_rng(seed).permutation(len(new)) % k
    cv = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fold, (fit, held) in enumerate(cv.split(ref, labels)):
        fitted = clone(model).fit(ref[fit], labels[fit])
        cols = np.searchsorted(classes, fitted.classes_)
        ref_scores[np.ix_(held, cols)] = fitted.predict_proba(ref[held])
        mine = np.flatnonzero(share == fold)
        if len(mine):
            new_scores[np.ix_(mine, cols)] = fitted.predict_proba(new[mine])
    return ref_scores, new_scores


def bbsd(ref_scores: np.ndarray, new_scores: np.ndarray, level: float) -> TestResult:
    """Kolmogorov-Smirnov on each class's softmax score, Bonferroni over the classes."""
    from scipy.stats import ks_2samp

    tests = [ks_2samp(ref_scores[:, k], new_scores[:, k]) for k in range(ref_scores.shape[1])]
    best = min(tests, key=lambda t: t.pvalue)
    return TestResult.at(best.statistic, best.pvalue * len(tests), level)


def mmd(
    ref: np.ndarray, new: np.ndarray, level: float, *, permutations: int = PERMUTATIONS, seed=0
) -> TestResult:
    """Unbiased MMD² with a Gaussian kernel (bandwidth: the pooled median distance), its
    p-value from ``permutations`` random relabellings of the pooled images."""
    from scipy.spatial.distance import cdist
    from scipy.stats import permutation_test

    pooled = np.vstack([ref, new]).astype(np.float64)
    d2 = cdist(pooled, pooled, "sqeuclidean")
    sigma2 = float(np.median(d2[np.triu_indices(len(pooled), 1)])) or 1.0
    kernel = np.exp(-d2 / (2 * sigma2))

    total, n, m = len(pooled), len(ref), len(new)
    rows, whole = kernel.sum(1), kernel.sum()

    def mmd2(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # x: the reference's image indices, (n,) or (batch, n) relabellings; y: the rest
        batch = np.atleast_2d(x)
        inside = np.zeros((len(batch), total))
        inside[np.arange(len(batch))[:, None], batch] = 1.0
        within = ((inside @ kernel) * inside).sum(1)  # a'Ka
        across = inside @ rows - within  # a'K(1-a)
        rest = whole - 2 * (inside @ rows) + within  # (1-a)'K(1-a)
        out = (
            (within - n) / (n * (n - 1))  # the kernel's diagonal is 1
            + (rest - m) / (m * (m - 1))
            - 2 * across / (n * m)
        )
        return out if np.ndim(x) > 1 else out[0]

    result = permutation_test(
        (np.arange(n), np.arange(n, total)),
        mmd2,
        permutation_type="independent",
        vectorized=True,
        n_resamples=permutations,
        alternative="greater",
        batch=100,
        rng=np.random.default_rng(seed),
    )
    return TestResult.at(result.statistic, result.pvalue, level)


def label_test(ref_labels: Sequence[str], new_labels: Sequence[str], level: float) -> TestResult:
    """Chi-square test of independence between sample and class, over the reference's classes."""
    from scipy.stats import chi2_contingency

    classes = sorted(set(ref_labels))
    ref_counts, new_counts = Counter(ref_labels), Counter(new_labels)
    table = np.array([[ref_counts[c] for c in classes], [new_counts[c] for c in classes]])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or table[1].sum() == 0:
        return TestResult.at(0.0, 1.0, level)
    result = chi2_contingency(table)
    return TestResult.at(result.statistic, result.pvalue, level)


def detect(
    ref: np.ndarray,
    new: np.ndarray,
    ref_labels: Sequence[str],
    new_labels: Sequence[str],
    *,
    alpha: float = ALPHA,
    max_images: int = MAX_IMAGES,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> DriftReport:
    """Compare the new images' embeddings (and labels) with the reference's."""
    ref_labels, new_labels = list(map(str, ref_labels)), list(map(str, new_labels))
    new_classes = sorted(set(new_labels) - set(ref_labels))
    if len(new) == 0:
        return DriftReport(len(ref), 0, {}, [], alpha)
    rng = np.random.default_rng(seed)
    ref_rows = _subset(np.arange(len(ref)), rng, max_images)
    new_rows = _subset(np.arange(len(new)), rng, max_images)
    ref_x, new_x = np.asarray(ref, np.float64)[ref_rows], np.asarray(new, np.float64)[new_rows]
    ref_y = [ref_labels[i] for i in ref_rows]
    tests: dict[str, TestResult] = {}
    if len(set(ref_y)) >= 2:
        ref_scores, new_scores = softmax_scores(ref_x, ref_y, new_x, seed=seed)
        tests["bbsd"] = bbsd(ref_scores, new_scores, alpha / 2)
    if len(new_x) >= 2 and len(ref_x) >= 2:
        tests["mmd"] = mmd(ref_x, new_x, alpha / 2, permutations=permutations, seed=seed)
    tests["labels"] = label_test(ref_labels, new_labels, alpha)
    return DriftReport(len(ref), len(new), tests, new_classes, alpha)
