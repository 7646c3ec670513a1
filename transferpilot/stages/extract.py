"""Stage ``extract``: features of every prepared image into ``data/features/``.

Writes ``<output>.npy`` (N, D) for every candidate layer, ``pre_logits`` and
``logits``, rows in ``manifest.csv`` order; ``moments.npz`` with, per
BatchNorm point, the dataset's per-channel mean and variance (over all images
and per split) beside ImageNet's running statistics; ``meta.json``; and
``imagenet_head.npy`` (the ImageNet classifier's weight rows, one prototype per
class) when the head is linear. The per-image work is cached by content under
``extract.cache_dir``, so only new images cost a forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import ExtractParams, ModelParams
from transferpilot.device import resolve_device
from transferpilot.features import (
    ExtractOptions,
    WrittenFeatures,
    moment_points,
    running_stats,
    write_features,
)
from transferpilot.intake import SPLITS, Record, read_manifest
from transferpilot.io import fresh_dir, save_npy, write_json
from transferpilot.stages import Paths, read_json, register_stage
from transferpilot.zoo import Backbone, create_backbone

log = logging.getLogger(__name__)


@register_stage("extract", sections=("model", "extract"))
def run(model: ModelParams, params: ExtractParams, paths: Paths) -> dict[str, Any]:
    records = read_manifest(paths.prepared / "manifest.csv")
    backbone = create_backbone(model.name, arch=model.arch)
    device = resolve_device(params.device)
    opts = ExtractOptions(
        batch_size=params.batch_size,
        workers=params.workers,
        pool_grid=params.pool_grid,
        shard_size=params.shard_size,
        amp=params.amp,
        channels_last=params.channels_last,
    )
    with fresh_dir(paths.features) as out:
        # Streamed: every output is written in chunks, so memory does not grow with the data.
        feats = write_features(
            backbone,
            [(r.path, r.sha256) for r in records],
            out,
            cache_root=params.cache_dir,
            groups=[r.split for r in records],
            device=device,
            opts=opts,
        )
        moments: dict[str, np.ndarray] = {}
        for scope in ("all", *SPLITS):
            for bn, m in feats.moments.get(scope, {}).items():
                moments[f"{scope}/mean/{bn}"] = m.mean
                moments[f"{scope}/var/{bn}"] = m.var
                moments[f"{scope}/count/{bn}"] = np.array(m.count)
        imagenet = running_stats(backbone.model, list(feats.moments.get("all", {})))
        for bn, (mean, var) in imagenet.items():
            moments[f"imagenet/mean/{bn}"] = mean.numpy()
            moments[f"imagenet/var/{bn}"] = var.numpy()
        meta = _meta(backbone, params, feats, records, device)
        with open(out / "moments.npz", "wb") as fh:
            np.savez(fh, **moments)
        head = backbone.head()
        if head is not None:  # ImageNet class prototypes, for the profile step
            save_npy(out / "imagenet_head.npy", head.weight.detach().float().cpu().numpy())
        write_json(out / "meta.json", meta)
    log.info(
        "extract: %d images, %d computed in %.1f s (%.1f images/s), %d outputs -> %s",
        len(records),
        feats.stats.computed,
        feats.stats.seconds,
        feats.stats.images_per_s,
        len(feats.dims),
        paths.features,
    )
    return meta


def _meta(
    backbone: Backbone,
    params: ExtractParams,
    feats: WrittenFeatures,
    records: list[Record],
    device: Any,
) -> dict[str, Any]:
    return {
        "model": backbone.spec,
        "weights_digest": backbone.weights_digest,
        "data_config": backbone.data_config.as_dict(),
        "pool_grid": params.pool_grid,
        "layers": [
            {
                "name": ly.name,
                "channels": ly.channels,
                "reduction": ly.reduction,
                "dim": feats.dims[ly.name],
            }
            for ly in backbone.layers
        ],
        "outputs": dict(feats.dims),
        "moment_points": moment_points(backbone.model, [ly.name for ly in backbone.layers]),
        "images": len(records),
        "device": str(device),
        "computed": feats.stats.computed,
        "seconds": round(feats.stats.seconds, 3),
    }


@dataclass(frozen=True)
class FeatureTable:
    """What later stages read: the records, and features aligned with them."""

    records: list[Record]
    meta: dict[str, Any]
    root: Path

    def array(self, name: str) -> np.ndarray:
        """(N, D) features of one output, memory-mapped."""
        return np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def moments(self) -> dict[str, np.ndarray]:
        with np.load(self.root / "moments.npz", allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def load(paths: Paths) -> FeatureTable:
    """The ``extract`` stage's outputs with the manifest they follow."""
    meta = read_json(paths.features / "meta.json", produced_by="extract")
    return FeatureTable(read_manifest(paths.prepared / "manifest.csv"), meta, paths.features)
