"""Which pretrained network: scores of each candidate backbone and the rule that picks one.

Light (numpy only): what a ranking *is*, the two transferability scores computed here
(:func:`logme`, :func:`knn_accuracy`) and the pick (:func:`pick_backbone`).
:func:`transferpilot.profile.select.rank_backbones` measures the candidates.

The score that ranks is the plain linear probe: the cross-validated accuracy of a linear
SVM on the candidate's best layer, on a stratified sample of the training images. Studies
of model selection (LogME, LEEP, NCE, SFDA and their 2025 re-evaluations) find that no
fancier score wins everywhere and that a linear or k-NN probe predicts the transferred
result as well as any; k-NN accuracy and LogME are measured beside it and shown, so a
user (and ``benchmarks/backbones.py``) can see whether they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferpilot._registry import JsonData


@dataclass(frozen=True)
class BackboneScore:
    """One candidate backbone, measured on the sample; costs estimated for the whole run."""

    model: str
    layer: str  # its best layer by the linear probe
    probe_accuracy: float  # linear probe CV accuracy on that layer
    probe_std: float
    folds: int
    knn_accuracy: float  # k-NN CV accuracy on the same layer and folds
    logme: float  # LogME evidence per image on the same layer (higher is better)
    layers: dict[str, float] = field(default_factory=dict)  # probe accuracy, every layer
    input_size: int = 0
    parameters: int = 0
    extract_minutes: float | None = None  # every image of the dataset, at the eval rate here
    finetune_minutes: float | None = None  # decide.finetune_epochs at the train rate here
    seconds: float = 0.0  # what measuring it cost here
    images_per_s: float | None = None  # extraction measured on the sample (None: all cached)
    chosen: bool = False
    verdict: str = ""

    @property
    def cost_minutes(self) -> float | None:
        """Extraction plus planned fine-tuning: the run's cost with this backbone, at most."""
        if self.extract_minutes is None:
            return None
        return self.extract_minutes + (self.finetune_minutes or 0.0)


@dataclass(frozen=True)
class BackboneRanking(JsonData):
    """The candidates, best first by probe, the one chosen and why (``backbones.json``)."""

    chosen: str
    reason: str
    sample_images: int
    scores: list[BackboneScore]
    seconds: float = 0.0

    def score(self, model: str) -> BackboneScore:
        return next(s for s in self.scores if s.model == model)

    def table(self) -> list[dict[str, Any]]:
        """One flat row per candidate (``profile --json``'s ``backbones``)."""
        rows = []
        for s in self.scores:
            row = {k: v for k, v in vars(s).items() if k != "layers"}
            rows.append(row | {"cost_minutes": s.cost_minutes, "layers": dict(s.layers)})
        return rows


def tie_margin(sample_images: int) -> float:
    """Probe accuracies closer than this are a tie: one image of the sample, at least half
    a point (a 3-fold CV on a few hundred images cannot resolve less)."""
    return max(0.005, 1.0 / max(1, sample_images))


def _verdict(
    s: BackboneScore,
    chosen: BackboneScore,
    over: set[str],
    tied: list[BackboneScore],
    margin: float,
    priced: bool,
    budget_minutes: float | None,
) -> str:
    """Why ``s`` was, or was not, the backbone chosen."""
    if s is chosen:
        return "chosen"
    if s.model in over:
        return (
            f"out: extracting every image would take about {s.extract_minutes:.0f} min, "
            f"over the {budget_minutes:g} min budget"
        )
    if s in tied:
        return (
            f"tie within {margin:.3f}: {chosen.model} costs less "
            f"(about {_cost(chosen):.1f} vs {_cost(s):.1f} min)"
            if priced
            else f"tie within {margin:.3f}: {chosen.model} is listed first"
        )
    return f"probes {chosen.probe_accuracy - s.probe_accuracy:.3f} below {chosen.model}"


def _cost(s: BackboneScore) -> float:
    return s.cost_minutes if s.cost_minutes is not None else 0.0


def pick_backbone(
    scores: list[BackboneScore], sample_images: int, budget_minutes: float | None
) -> BackboneRanking:
    """The candidate to use, with every candidate's verdict in words.

    A candidate whose extraction alone would exceed ``budget_minutes`` is out (unless all
    are: then the cheapest). Among the rest, the best probe wins; candidates within
    :func:`tie_margin` of it are a tie, which the cheaper run wins (the smaller network:
    the static prior), so a bigger backbone is taken only for a difference the sample can
    show. When a tie's costs are unknown (throughput not measured), the first listed
    candidate wins (list the cheapest first).
    """
    if not scores:
        raise ValueError("no candidate backbones to pick from")

    over = {
        s.model
        for s in scores
        if budget_minutes is not None
        and s.extract_minutes is not None
        and s.extract_minutes > budget_minutes
    }
    eligible = [s for s in scores if s.model not in over]
    if not eligible:
        eligible = [min(scores, key=lambda s: s.extract_minutes or 0.0)]
        over.discard(eligible[0].model)
    top = max(eligible, key=lambda s: s.probe_accuracy)
    margin = tie_margin(sample_images)
    tied = [s for s in eligible if s.probe_accuracy >= top.probe_accuracy - margin]
    priced = all(s.cost_minutes is not None for s in tied)
    # a tie: the cheaper run; unpriced (no throughput measured), the first listed
    chosen = min(tied, key=lambda s: (_cost(s), -s.probe_accuracy)) if priced else tied[0]
    verdicts = {
        s.model: _verdict(s, chosen, over, tied, margin, priced, budget_minutes) for s in scores
    }
    ranked = sorted(scores, key=lambda s: -s.probe_accuracy)
    ranked = [
        BackboneScore(**{**vars(s), "chosen": s is chosen, "verdict": verdicts[s.model]})
        for s in ranked
    ]
    others = ", ".join(
        f"{s.model} {s.probe_accuracy:.3f}" for s in ranked if s.model != chosen.model
    )
    measured = (
        f"on a stratified sample of {sample_images} training images "
        f"({chosen.probe_accuracy:.3f} on {chosen.layer}" + (f"; {others}" if others else "") + ")"
    )
    if len(tied) > 1:
        which = (
            f"the cheapest run (about {_cost(chosen):.1f} min here)" if priced else "first listed"
        )
        why = (
            f"Backbone {chosen.model}: {which} "
            f"among the {len(tied)} of {len(scores)} candidates whose linear probe is within "
            f"{margin:.3f} of the best, {measured}"
        )
    else:
        why = (
            f"Backbone {chosen.model}: the best linear probe of {len(scores)} candidates {measured}"
        )
    return BackboneRanking(chosen.model, why + ".", sample_images, ranked)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., ICML 2021): the log marginal evidence per image of a Bayesian
    linear regression from ``features`` to each class's one-hot target, maximised over
    the prior and noise precisions by the paper's fixed-point iteration, averaged over
    classes. Higher is better; comparable between backbones on the same images."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    n, d = f.shape
    if d > n:  # work in the n-dimensional row space: same evidence, smaller eigenproblem
        sigma, v = np.linalg.eigh(f @ f.T)
        sigma = np.clip(sigma, 0.0, None)
        basis = f.T @ v / np.sqrt(np.maximum(sigma, 1e-12))
    else:
        sigma, basis = np.linalg.eigh(f.T @ f)
        sigma = np.clip(sigma, 0.0, None)
    zero = d - len(sigma)  # directions with no data: eigenvalue 0
    evidences = []
    for label in np.unique(labels):
        y = (labels == label).astype(np.float64)
        proj = basis.T @ (f.T @ y)  # F^T y in the eigenbasis
        alpha, beta = 1.0, 1.0
        for _ in range(11):  # converges in a few steps
            lam = alpha / beta
            gamma = float((sigma / (sigma + lam)).sum())
            m_coef = proj * beta / (alpha + beta * sigma)
            m2 = float((m_coef**2).sum())
            residual = float(((y - f @ (basis @ m_coef)) ** 2).sum())
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (residual + 1e-5)
            if abs(alpha / beta - lam) / lam < 0.01:
                break
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * (np.log(alpha + beta * sigma).sum() + zero * np.log(alpha))
            - beta / 2 * residual
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int, k: int = 5
) -> float:
    """Stratified ``folds``-fold CV accuracy of a ``k``-nearest-neighbour vote by cosine
    similarity on standardised features."""
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    folds = max(2, min(folds, int(counts.min())))
    correct = 0
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-8
        a, b = (x[train] - mean) / std, (x[test] - mean) / std
        a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
        b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
        near = np.argsort(-(b @ a.T), axis=1)[:, : min(k, len(train))]
        votes = y[train][near]
        for row, truth in zip(votes, y[test], strict=True):
            names, count = np.unique(row, return_counts=True)
            correct += names[count.argmax()] == truth
    return correct / len(y)
