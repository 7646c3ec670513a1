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
from typing import Any

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
    "WrittenFeatures",
    "extract_features",
    "linear_inputs",
    "moment_points",
    "output_names",
    "pool",
    "running_stats",
    "unique_points",
    "write_features",
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


def _cached(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    cache_root: Path,
    device: torch.device | None,
    opts: ExtractOptions | None,
) -> tuple[FeatureCache, ExtractStats, list[str], list[str], list[str]]:
    """Compute what the cache lacks; return it with the output and moment names to read."""
    opts = opts or ExtractOptions()
    cache = FeatureCache(cache_root, cache_key(backbone, opts.pool_grid))
    stats = extract_to_cache(
        backbone, items, cache, device=device or torch.device("cpu"), opts=opts
    )
    bns = unique_points(moment_points(backbone.model, [layer.name for layer in backbone.layers]))
    moment_names = [MEAN_PREFIX + b for b in bns] + [SQ_PREFIX + b for b in bns]
    return cache, stats, output_names(backbone), bns, moment_names


def extract_features(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    *,
    cache_root: Path,
    device: torch.device | None = None,
    opts: ExtractOptions | None = None,
) -> FeatureSet:
    """Features of every ``(path, sha256)``, computing only those not cached yet."""
    cache, stats, names, bns, moment_names = _cached(backbone, items, cache_root, device, opts)
    data = cache.read([sha for _, sha in items], names + moment_names)
    return FeatureSet(
        arrays={n: data[n] for n in names},
        per_image_mean={b: data[MEAN_PREFIX + b] for b in bns},
        per_image_sq={b: data[SQ_PREFIX + b] for b in bns},
        stats=stats,
    )


@dataclass(frozen=True)
class WrittenFeatures:
    """What :func:`write_features` wrote: each output's width, moments per group, stats."""

    dims: dict[str, int]
    moments: dict[str, dict[str, Moments]]
    stats: ExtractStats


def write_features(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    out_dir: Path,
    *,
    cache_root: Path,
    groups: Sequence[str] | None = None,
    device: torch.device | None = None,
    opts: ExtractOptions | None = None,
    chunk_rows: int = 4096,
) -> WrittenFeatures:
    """:func:`extract_features`, streamed to disk: ``out_dir/<output>.npy`` (float32, one row
    per item, in order), written ``chunk_rows`` rows at a time, so memory stays bounded
    whatever the number of images. BatchNorm-input moments are aggregated over all rows
    (group ``"all"``) and over each value of ``groups`` (e.g. every row's split).
    """
    cache, stats, names, bns, moment_names = _cached(backbone, items, cache_root, device, opts)
    shas = [sha for _, sha in items]
    labels = np.asarray(list(groups) if groups is not None else [""] * len(shas))
    sums: dict[str, dict[str, list]] = {}
    files: dict[str, Any] = {}
    dims: dict[str, int] = {}
    try:
        for start in range(0, len(shas), chunk_rows):
            data = cache.read(shas[start : start + chunk_rows], names + moment_names)
            if not files:
                for name in names:
                    dims[name] = int(data[name].shape[1])
                    files[name] = open(out_dir / f"{name}.npy", "wb")  # noqa: SIM115
                    header = {
                        "descr": "<f4",
                        "fortran_order": False,
                        "shape": (len(shas), dims[name]),
                    }
                    np.lib.format.write_array_header_1_0(files[name], header)
            for name in names:
                files[name].write(np.ascontiguousarray(data[name], dtype="<f4").tobytes())
            chunk_groups = labels[start : start + chunk_rows]
            for group in ["all", *sorted(set(chunk_groups.tolist()) - {""})]:
                rows = slice(None) if group == "all" else chunk_groups == group
                for bn in bns:
                    mean = data[MEAN_PREFIX + bn][rows].astype(np.float64)
                    sq = data[SQ_PREFIX + bn][rows].astype(np.float64)
                    acc = sums.setdefault(group, {}).setdefault(bn, [0.0, 0.0, 0])
                    acc[0] = acc[0] + mean.sum(0)
                    acc[1] = acc[1] + sq.sum(0)
                    acc[2] += len(mean)
    finally:
        for fh in files.values():
            fh.close()
    moments = {
        group: {
            bn: Moments(m / n, np.maximum(s / n - (m / n) ** 2, 0.0), n)
            for bn, (m, s, n) in per_bn.items()
        }
        for group, per_bn in sums.items()
    }
    return WrittenFeatures(dims, moments, stats)


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
