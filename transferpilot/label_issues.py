"""Training images whose label looks wrong: confident learning on out-of-fold probabilities.

A head's cross-validation already gives every training image a probability from a
model that never saw it (:meth:`~transferpilot.estimators.LinearClassifier.out_of_fold_proba`).
Confident learning (Northcutt et al., 2021) estimates from those probabilities how often
each class is labelled as each other one, and flags the images most likely to be among
the mislabelled: cleanlab's ``find_label_issues``, a maintained library, does the
counting; this module names the images and says what they look like instead.

Flagged images are *suspects*, listed for a person to look at (``reports/label_issues.csv``
and the report's gallery); they are dropped from training only when
``train.drop_label_issues`` says so. Imports scikit-learn and cleanlab only when asked
to find issues, never PyTorch.

>>> issues = find_label_issues(paths, labels, oof_proba, classes, source="...")  # doctest: +SKIP
>>> issues.count, issues.issues[0].suggested  # doctest: +SKIP
(12, 'tulip')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transferpilot._registry import JsonData
from transferpilot.layer_names import PRE_LOGITS, linear_inputs

if TYPE_CHECKING:
    from transferpilot.config import TrainParams
    from transferpilot.features import FeatureTable

#: Fewer training images than this in some class, and no issue is looked for.
MIN_PER_CLASS = 2
#: A class with this share of its images flagged is suspect as a whole (warned, not dropped).
WHOLE = 0.5


@dataclass(frozen=True)
class LabelIssue:
    """One suspect: its given label, the label its out-of-fold probabilities suggest, and
    both probabilities."""

    path: str
    given: str
    suggested: str
    given_prob: float
    suggested_prob: float


@dataclass(frozen=True)
class LabelIssues(JsonData):
    """What was checked and what was found, most suspect first.

    ``source``: whose out-of-fold probabilities (the chosen head's, or a probe's);
    ``checked``: training images examined; ``skipped``: why none were looked for
    (empty when they were); ``warnings``: what a person should know before trusting the
    list (a whole class flagged)."""

    source: str
    checked: int
    issues: tuple[LabelIssue, ...] = ()
    skipped: str = ""
    warnings: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()  # classes flagged as a whole (see ``warnings``)

    @property
    def count(self) -> int:
        return len(self.issues)

    def droppable(self) -> set[str]:
        """The flagged images that ``train.drop_label_issues`` may drop: never those of a
        class flagged as a whole (that is a question about the class, not about images)."""
        return {issue.path for issue in self.issues if issue.given not in self.whole}

    def words(self) -> str:
        """One sentence: how many, out of how many, by what; or why none were looked for."""
        if self.skipped:
            return f"Label issues were not looked for: {self.skipped}."
        share = self.count / max(self.checked, 1)
        return (
            f"{self.count} of {self.checked} training images ({share:.1%}) look mislabelled "
            f"(confident learning on the out-of-fold probabilities of {self.source})."
        )


def skipped(source: str, checked: int, why: str) -> LabelIssues:
    return LabelIssues(source=source, checked=checked, skipped=why)


def find_label_issues(
    paths: Sequence[str],
    labels: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    source: str,
) -> LabelIssues:
    """The training images ``paths`` (labelled ``labels``) that confident learning flags,
    given ``proba`` (rows: images; columns: ``classes``), from a model that did not see
    each row. Ranked by self-confidence: the lowest probability of the given label first."""
    from cleanlab.filter import find_label_issues as confident_learning  # defers cleanlab

    labels = np.asarray(labels).astype(str)
    names = [str(c) for c in classes]
    counts = Counter(labels)
    rare = sorted(c for c in names if counts.get(c, 0) < MIN_PER_CLASS)
    if rare:
        why = f"classes with fewer than {MIN_PER_CLASS} training images ({', '.join(rare)})"
        return skipped(source, len(labels), why)
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    given = np.asarray([names.index(label) for label in labels])
    ranked = confident_learning(
        labels=given, pred_probs=proba, return_indices_ranked_by="self_confidence"
    )
    issues = tuple(
        LabelIssue(
            path=str(paths[i]),
            given=names[given[i]],
            suggested=names[int(proba[i].argmax())],
            given_prob=float(proba[i, given[i]]),
            suggested_prob=float(proba[i].max()),
        )
        for i in ranked
    )
    flagged = Counter(issue.given for issue in issues)
    whole = [n for n in names if flagged.get(n, 0) >= max(MIN_PER_CLASS, WHOLE * counts[n])]
    warnings = tuple(
        f"{flagged[name]} of the {counts[name]} training images of class {name!r} are flagged: "
        "the class as a whole may be labelled or named wrong, or unlike anything else in the "
        "set; its images are never dropped on this evidence alone"
        for name in whole
    )
    return LabelIssues(
        source=source, checked=len(labels), issues=issues, warnings=warnings, whole=tuple(whole)
    )


def probe_proba(X: np.ndarray, labels: Sequence[str], settings: TrainParams) -> np.ndarray | None:
    """Out-of-fold probabilities of softmax regression on ``X`` (C chosen by the ``train``
    settings' cross-validation), classes sorted: the evidence for a strategy that has none of
    its own (fine-tuning, the pretrained head)."""
    from transferpilot.estimators import LinearClassifier  # defers scikit-learn

    return LinearClassifier.from_settings("linear", settings).fit(X, labels).out_of_fold_proba()


def probe_issues(table: FeatureTable, layer: str, settings: TrainParams) -> LabelIssues:
    """Label issues among the training rows of ``table`` by softmax regression on ``layer``'s
    cached features, cross-validated with ``settings``."""
    train = np.flatnonzero(table.split == "train")
    labels = [str(label) for label in table.labels[train]]
    source = f"softmax regression on {layer} (cross-validated)"
    if not labels or min(Counter(labels).values()) < MIN_PER_CLASS:
        return skipped(
            source, len(labels), f"a class has fewer than {MIN_PER_CLASS} training images"
        )
    proba = probe_proba(linear_inputs(layer, table.array(layer))[train], labels, settings)
    if proba is None:
        return skipped(source, len(labels), "too few training images to cross-validate")
    paths = [str(table.records[i].path) for i in train]
    return find_label_issues(paths, labels, proba, sorted(set(labels)), source=source)


def head_layer(candidates: Sequence[Any]) -> str:
    """The layer whose head (softmax regression or the linear SVM) scored best among a
    decision's candidates; the CNN codes when none was scored."""
    heads = [c for c in candidates if c.strategy in ("linear", "svm") and c.score is not None]
    return max(heads, key=lambda c: c.score).layer if heads else PRE_LOGITS
