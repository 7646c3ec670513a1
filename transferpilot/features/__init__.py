"""Cached, incremental, multi-layer feature extraction.

>>> from transferpilot.config import ExtractParams
>>> from transferpilot.zoo import create_backbone
>>> backbone = create_backbone("efficientnet_lite0")  # doctest: +SKIP
>>> items = [(Path("a.png"), "<sha256 of a.png>")]
>>> feats = extract_features(backbone, items, ExtractParams())  # doctest: +SKIP
>>> feats.arrays["pre_logits"].shape  # doctest: +SKIP
(1797, 1280)

Reading a finished table (:class:`FeatureTable`) imports no PyTorch: a head on cached
features starts at once. What extracts (and so needs PyTorch) is loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from transferpilot.features._cache import CacheKey, FeatureCache
from transferpilot.features._table import FeatureMeta, FeatureTable, Moments, write_table
from transferpilot.layer_names import linear_inputs

if TYPE_CHECKING:
    from transferpilot.features._extract import (
        MEAN_PREFIX,
        SQ_PREFIX,
        ExtractStats,
        FeatureSet,
        extract_features,
        fill_cache,
        missing_shards,
        open_cache,
        output_names,
        pixel_codes,
        pool,
    )
    from transferpilot.features._moments import moment_points, running_stats, unique_points

#: Names that need PyTorch, imported when first asked for (PEP 562).
_DEFERRED = {
    **dict.fromkeys(
        (
            "MEAN_PREFIX",
            "SQ_PREFIX",
            "ExtractStats",
            "FeatureSet",
            "extract_features",
            "fill_cache",
            "missing_shards",
            "open_cache",
            "output_names",
            "pixel_codes",
            "pool",
        ),
        "transferpilot.features._extract",
    ),
    **dict.fromkeys(
        ("moment_points", "running_stats", "unique_points"), "transferpilot.features._moments"
    ),
}


def __getattr__(name: str) -> Any:
    if name in _DEFERRED:
        return getattr(import_module(_DEFERRED[name]), name)  # defers torch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
