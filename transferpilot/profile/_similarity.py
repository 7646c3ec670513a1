"""How ImageNet-like a dataset is, measured in the pretrained network itself.

Two views, both from the model alone (no ImageNet images needed):

* **Depth profile.** Every BatchNorm layer stores ImageNet's per-channel mean
  and variance of its input. For the dataset we record the same moments. Per
  channel, the Gaussian KL divergence ``KL(dataset || ImageNet)`` (nats) says
  how surprising the dataset's activations are under ImageNet's statistics;
  ``exp(-mean KL)``, the *overlap*, is the per-channel geometric-mean
  likelihood ratio, 1 for identical statistics, falling towards 0. Early
  layers (edges, colours) stay close for most data; later layers drift when
  the content is not ImageNet's.
* **Head.** The ImageNet classifier's predictions on the dataset: mean top-1
  probability (confidence), mean entropy normalised by ``ln(1000)``, and the
  mean cosine between each image's CNN code and its nearest class prototype
  (a row of the classifier).

The score (documented in docs/guide/decide.md)::

    certainty  = 1 - mean normalised entropy of the ImageNet head   in [0, 1]
    overlap    = exp(-mean per-channel KL) at the last BatchNorm     in [0, 1]
    similarity = certainty * overlap          (certainty alone without BatchNorm)

``certainty`` is 1 when the network is sure every image is one ImageNet
class and 0 when its prediction is uniform; ``overlap`` discounts it when the
features the head reads are distributed unlike ImageNet's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.special import log_softmax

#: Added to variances so dead channels (variance ~ 0) do not dominate the KL.
VAR_EPS = 1e-3


def gaussian_kl(
    mean_p: np.ndarray, var_p: np.ndarray, mean_q: np.ndarray, var_q: np.ndarray
) -> np.ndarray:
    """Per-channel ``KL(N(mean_p, var_p) || N(mean_q, var_q))`` in nats (0 iff equal)."""
    var_p = np.asarray(var_p, dtype=np.float64) + VAR_EPS
    var_q = np.asarray(var_q, dtype=np.float64) + VAR_EPS
    diff = np.asarray(mean_p, dtype=np.float64) - np.asarray(mean_q, dtype=np.float64)
    return 0.5 * (np.log(var_q / var_p) + (var_p + diff**2) / var_q - 1.0)


@dataclass(frozen=True)
class LayerGap:
    """The dataset's distance from ImageNet at a layer (measured at its BatchNorm ``point``)."""

    layer: str
    point: str
    channels: int
    kl_mean: float
    kl_median: float
    overlap: float


def depth_profile(
    points: Mapping[str, str],
    dataset: Mapping[str, tuple[np.ndarray, np.ndarray]],
    imagenet: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[LayerGap]:
    """One :class:`LayerGap` per ``{layer: BatchNorm point}``: candidate layers, then pre_logits."""
    gaps = []
    for layer, point in points.items():
        kl = gaussian_kl(*dataset[point], *imagenet[point])
        kl_mean = float(kl.mean())
        gaps.append(
            LayerGap(layer, point, len(kl), kl_mean, float(np.median(kl)), float(np.exp(-kl_mean)))
        )
    return gaps


@dataclass(frozen=True)
class HeadMeasures:
    """What the ImageNet head says about the dataset (means over images)."""

    confidence: float
    entropy: float
    certainty: float
    prototype_cosine: float | None


def head_measures(
    logits: np.ndarray, pre_logits: np.ndarray | None = None, prototypes: np.ndarray | None = None
) -> HeadMeasures:
    """Confidence, normalised entropy and nearest-prototype cosine of (N, K) logits."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    p = np.exp(logp)
    entropy = float((-(p * logp).sum(1) / np.log(logp.shape[1])).mean())
    cosine = None
    if pre_logits is not None and prototypes is not None:
        f = pre_logits / (np.linalg.norm(pre_logits, axis=1, keepdims=True) + 1e-12)
        w = prototypes / (np.linalg.norm(prototypes, axis=1, keepdims=True) + 1e-12)
        cosine = float((f @ w.T).max(1).mean())
    return HeadMeasures(
        confidence=float(p.max(1).mean()),
        entropy=entropy,
        certainty=1.0 - entropy,
        prototype_cosine=cosine,
    )


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (N, D), as in FID."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


@dataclass(frozen=True)
class Similarity:
    """The similarity score with its parts and the formula used."""

    score: float
    certainty: float
    overlap: float | None
    formula: str
    head: HeadMeasures
    depth: list[LayerGap]
    note: str = ""


def similarity(head: HeadMeasures, depth: list[LayerGap]) -> Similarity:
    """Combine the head's certainty and the last BatchNorm point's overlap (module docstring)."""
    if not depth:
        return Similarity(
            score=head.certainty,
            certainty=head.certainty,
            overlap=None,
            formula="similarity = 1 - mean normalised entropy of the ImageNet head",
            head=head,
            depth=[],
            note="this model has no BatchNorm: the similarity uses the ImageNet head alone",
        )
    overlap = depth[-1].overlap
    return Similarity(
        score=head.certainty * overlap,
        certainty=head.certainty,
        overlap=overlap,
        formula=(
            "similarity = (1 - mean normalised entropy of the ImageNet head) "
            f"x exp(-mean per-channel KL at {depth[-1].point})"
        ),
        head=head,
        depth=depth,
    )
