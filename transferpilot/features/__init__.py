"""Cached, incremental, multi-layer feature extraction.

>>> from transferpilot.config import ExtractParams
>>> from transferpilot.zoo import create_backbone
>>> backbone = create_backbone("efficientnet_lite0")  # doctest: +SKIP
>>> items = [(Path("a.png"), "<sha256 of a.png>")]
>>> feats = extract_features(backbone, items, ExtractParams())  # doctest: +SKIP
>>> feats.arrays["pre_logits"].shape  # doctest: +SKIP
(1797, 1280)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferpilot.config import ExtractParams
from transferpilot.features._cache import CacheKey, FeatureCache
from transferpilot.features._extract import (
    MEAN_PREFIX,
    SQ_PREFIX,
    ExtractStats,
    cache_key,
    extract_to_cache,
    output_names,
    pixel_codes,
    pool,
    resolve_runtime,
)
from transferpilot.features._moments import moment_points, running_stats, unique_points
from transferpilot.features._table import FeatureMeta, FeatureTable, Moments, write_table
from transferpilot.layers import linear_inputs
from transferpilot.zoo import Backbone

__all__ = [
    "MEAN_PREFIX",
    "SQ_PREFIX",
    "CacheKey",
    "ExtractStats",
    "FeatureCache",
    "FeatureMeta",
    "FeatureSet",
    "FeatureTable",
    "Moments",
    "extract_features",
    "fill_cache",
    "linear_inputs",
    "moment_points",
    "output_names",
    "pixel_codes",
    "pool",
    "running_stats",
    "unique_points",
    "write_table",
]


@dataclass
class FeatureSet:
    """Features aligned with the requested images: ``arrays[name]`` is (N, D) float32 for
    every candidate layer, ``pre_logits`` and ``logits``; ``stats`` says what was computed."""

    arrays: dict[str, np.ndarray]
    stats: ExtractStats


def fill_cache(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    settings: ExtractParams,
    device: torch.device | None = None,
) -> tuple[FeatureCache, ExtractStats]:
    """Compute what ``settings.cache_dir`` lacks for ``(path, sha256)`` items; the cache."""
    device = device or torch.device("cpu")
    runtime = resolve_runtime(settings.runtime, device)
    cache = FeatureCache(settings.cache_dir, cache_key(backbone, settings.pool_grid, runtime))
    stats = extract_to_cache(backbone, items, cache, device=device, opts=settings)
    return cache, stats


def extract_features(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    settings: ExtractParams,
    device: torch.device | None = None,
) -> FeatureSet:
    """Features of every ``(path, sha256)``, computing only those not cached yet."""
    cache, stats = fill_cache(backbone, items, settings, device)
    names = output_names(backbone)
    return FeatureSet(cache.read([sha for _, sha in items], names), stats)
