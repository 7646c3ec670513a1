"""Cached, incremental, multi-layer feature extraction.

>>> from transferpilot.zoo import create_backbone
>>> backbone = create_backbone("efficientnet_lite0")  # doctest: +SKIP
>>> items = [(Path("a.png"), "<sha256 of a.png>")]
>>> feats = extract_features(backbone, items, cache_root=Path("cache"))  # doctest: +SKIP
>>> feats.arrays["pre_logits"].shape  # doctest: +SKIP
(1797, 1280)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferpilot.features._cache import CacheKey, FeatureCache
from transferpilot.features._extract import (
    MEAN_PREFIX,
    SQ_PREFIX,
    ExtractOptions,
    ExtractStats,
    cache_key,
    extract_to_cache,
    output_names,
    pool,
)
from transferpilot.features._moments import moment_points, running_stats, unique_points
from transferpilot.zoo import Backbone

__all__ = [
    "CacheKey",
    "ExtractOptions",
    "ExtractStats",
    "FeatureCache",
    "FeatureSet",
    "Moments",
    "extract_features",
    "linear_inputs",
    "moment_points",
    "output_names",
    "pool",
    "running_stats",
    "unique_points",
]


@dataclass(frozen=True)
class Moments:
    """Per-channel mean and variance of a BatchNorm's input over a set of images."""

    mean: np.ndarray
    var: np.ndarray
    count: int


@dataclass
class FeatureSet:
    """Features aligned with the requested images, and how they were obtained.

    ``arrays[name]`` is (N, D) float32 for every candidate layer, ``pre_logits``
    and ``logits``; ``moment_sums[bn]`` holds (sum of per-image means, sum of
    per-image mean squares) so subsets can be aggregated with :meth:`moments`.
    """

    arrays: dict[str, np.ndarray]
    per_image_mean: dict[str, np.ndarray]
    per_image_sq: dict[str, np.ndarray]
    stats: ExtractStats

    def moments(self, rows: np.ndarray | None = None) -> dict[str, Moments]:
        """Aggregate BatchNorm-input moments over ``rows`` (default: all images)."""
        out = {}
        for bn, means in self.per_image_mean.items():
            sq = self.per_image_sq[bn]
            if rows is not None:
                means, sq = means[rows], sq[rows]
            mean = means.mean(0, dtype=np.float64)
            var = np.maximum(sq.mean(0, dtype=np.float64) - mean**2, 0.0)
            out[bn] = Moments(mean, var, len(means))
        return out


def extract_features(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    *,
    cache_root: Path,
    device: torch.device | None = None,
    opts: ExtractOptions | None = None,
) -> FeatureSet:
    """Features of every ``(path, sha256)``, computing only those not cached yet."""
    opts = opts or ExtractOptions()
    device = device or torch.device("cpu")
    cache = FeatureCache(cache_root, cache_key(backbone, opts.pool_grid))
    stats = extract_to_cache(backbone, items, cache, device=device, opts=opts)
    bns = unique_points(moment_points(backbone.model, [layer.name for layer in backbone.layers]))
    names = output_names(backbone)
    moment_names = [MEAN_PREFIX + b for b in bns] + [SQ_PREFIX + b for b in bns]
    data = cache.read([sha for _, sha in items], names + moment_names)
    return FeatureSet(
        arrays={n: data[n] for n in names},
        per_image_mean={b: data[MEAN_PREFIX + b] for b in bns},
        per_image_sq={b: data[SQ_PREFIX + b] for b in bns},
        stats=stats,
    )


def linear_inputs(name: str, array: np.ndarray) -> np.ndarray:
    """A layer's features as a linear model reads them (float32).

    ``logits`` become log-probabilities (log-softmax): the pretrained head's own
    answer over the 1,000 ImageNet classes, a candidate layer like any other.
    """
    x = np.asarray(array, dtype=np.float32)
    if name == "logits":
        from scipy.special import log_softmax

        x = log_softmax(x, axis=1).astype(np.float32)
    return x
