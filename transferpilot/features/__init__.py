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
    fill_cache,
    forward_graph,
    open_cache,
    output_names,
    pixel_codes,
    pool,
)
from transferpilot.features._moments import moment_points, running_stats, unique_points
from transferpilot.features._table import FeatureMeta, FeatureTable, Moments, write_table
from transferpilot.layer_names import linear_inputs
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
    "missing_shards",
    "moment_points",
    "open_cache",
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


def missing_shards(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    settings: ExtractParams,
    shards: int,
    device: torch.device | None = None,
    *,
    max_images: int = 1000,
) -> list[list[tuple[Path, str]]]:
    """The ``(path, sha256)`` items the cache lacks, one per image, in non-empty groups
    by image hash: ``shards`` groups, more where a group would exceed ``max_images``
    on average (a retry then repeats little). An image falls in the same group wherever
    this runs. On the CPU the ONNX graph is exported here first, so workers that start
    together find it ready."""
    cache = open_cache(backbone, settings, device)
    todo = set(cache.missing(sha for _, sha in items))
    count = max(1, shards, -(-len(todo) // max_images))
    groups: list[list[tuple[Path, str]]] = [[] for _ in range(count)]
    for path, sha in items:
        if sha in todo:
            todo.discard(sha)
            groups[int(sha[:8], 16) % len(groups)].append((path, sha))
    groups = [g for g in groups if g]
    if groups and cache.key.runtime == "onnxruntime":
        forward_graph(backbone, cache, settings)
    return groups


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
