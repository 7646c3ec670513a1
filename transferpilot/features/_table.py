"""The ``extract`` stage's folder as one typed artefact: :func:`write_table` writes it,
:class:`FeatureTable` reads it. Nothing else knows its files.

``<output>.npy``      (N, D) float32 per candidate layer, ``pre_logits`` and ``logits``,
                      rows in the manifest's order (memory-mapped when read)
``moments.npz``       ``mean`` / ``var`` (scopes, channels) and ``count`` (scopes,): the
                      per-channel moments at every BatchNorm point, channels of all points
                      concatenated in ``meta.moments.points`` order
``imagenet_head.npy`` the ImageNet classifier's weight rows (one prototype per class), when
                      the head is linear
``meta.json``         :class:`FeatureMeta`

Scopes are ``all``, each split present, and ``imagenet`` (the BatchNorms' running
statistics, ``count`` 0). Nothing here depends on the machine or on the cache's state,
so the same images and settings give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferpilot._registry import JsonData
from transferpilot.config import ExtractParams
from transferpilot.errors import ModelError
from transferpilot.intake import Record, read_manifest
from transferpilot.io import read_json, save_npy, save_npz, write_json
from transferpilot.layer_names import JOIN, parts

if TYPE_CHECKING:
    from transferpilot.features._extract import ExtractStats
    from transferpilot.zoo import Backbone

IMAGENET = "imagenet"
ALL = "all"


@dataclass(frozen=True)
class Moments:
    """Per-channel mean and variance of a BatchNorm's input over a set of images."""

    mean: np.ndarray
    var: np.ndarray
    count: int


@dataclass(frozen=True)
class LayerInfo:
    """A candidate layer: channels, stride from the input, pooled feature width."""

    name: str
    channels: int
    reduction: int
    dim: int


@dataclass(frozen=True)
class MomentLayout:
    """Where each BatchNorm point's channels sit in ``moments.npz``."""

    scopes: list[str]
    points: list[str]
    channels: list[int]


@dataclass(frozen=True)
class FeatureMeta(JsonData):
    """``meta.json``: what the features are and how they were made."""

    model: str
    weights_digest: str
    data_config: dict[str, Any]
    pool_grid: int
    layers: list[LayerInfo]
    outputs: dict[str, int]
    moment_points: dict[str, str]
    moments: MomentLayout
    images: int

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def input_size(self) -> int:
        """The square resolution the features were computed at."""
        return int(self.data_config["input_size"][1])


def _write_moments(
    path: Path,
    backbone: Backbone,
    bns: list[str],
    scopes: list[str],
    sums: dict[str, list[Any]],
) -> list[int]:
    """Per-channel mean and variance at each BatchNorm input, per scope (every image, each
    split) and ImageNet's (the running statistics), into ``moments.npz``; returns the
    channels of each point."""
    from transferpilot.features._moments import running_stats  # defers torch

    imagenet = running_stats(backbone.model, bns)
    channels = [int(imagenet[b][0].numel()) for b in bns]
    zeros = np.zeros(sum(channels))
    mean, var, count = [], [], []
    for scope in scopes:
        total, total_sq, n = sums[scope]
        mu = zeros + np.asarray(total) / max(n, 1)
        mean.append(mu)
        var.append(np.maximum(zeros + np.asarray(total_sq) / max(n, 1) - mu**2, 0.0))
        count.append(n)
    mean.append(zeros + np.concatenate([imagenet[b][0].double().numpy() for b in bns] or [zeros]))
    var.append(zeros + np.concatenate([imagenet[b][1].double().numpy() for b in bns] or [zeros]))
    count.append(0)
    save_npz(
        path,
        mean=np.stack(mean),
        var=np.stack(var),
        count=np.asarray(count, np.int64),
    )
    return channels


def write_table(
    backbone: Backbone,
    records: Sequence[Record],
    out: Path,
    settings: ExtractParams,
    *,
    device: Any = None,
    chunk_rows: int = 4096,
) -> tuple[FeatureMeta, ExtractStats]:
    """Features of ``records`` into the folder ``out`` (see the module docstring).

    Cached features are read back, the rest computed (:func:`fill_cache`); every
    output is streamed to disk ``chunk_rows`` rows at a time, so memory stays
    bounded whatever the number of images.
    """
    from transferpilot.features._extract import (  # defers torch
        MEAN_PREFIX,
        SQ_PREFIX,
        fill_cache,
        output_names,
    )
    from transferpilot.features._moments import moment_points, unique_points

    cache, stats = fill_cache(backbone, [(r.path, r.sha256) for r in records], settings, device)
    names = output_names(backbone)
    points = moment_points(backbone.model, [layer.name for layer in backbone.layers])
    bns = unique_points(points)
    moment_names = [MEAN_PREFIX + b for b in bns] + [SQ_PREFIX + b for b in bns]
    shas = [r.sha256 for r in records]
    splits = np.asarray([r.split for r in records])
    scopes = [ALL, *dict.fromkeys(r.split for r in records)]
    sums: dict[str, list[Any]] = {s: [0.0, 0.0, 0] for s in scopes}
    files: dict[str, Any] = {}
    dims: dict[str, int] = {}
    try:
        for start in range(0, len(shas), chunk_rows):
            data = cache.read(shas[start : start + chunk_rows], names + moment_names)
            if not files:
                for name in names:
                    dims[name] = int(data[name].shape[1])
                    files[name] = open(out / f"{name}.npy", "wb")  # noqa: SIM115
                    shape = (len(shas), dims[name])
                    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_1_0(files[name], header)
            for name in names:
                files[name].write(np.ascontiguousarray(data[name], dtype="<f4").tobytes())
            # per image: mean and mean square of each channel, all points side by side
            mean = np.concatenate([data[MEAN_PREFIX + b] for b in bns], axis=1) if bns else None
            sq = np.concatenate([data[SQ_PREFIX + b] for b in bns], axis=1) if bns else None
            chunk = splits[start : start + chunk_rows]
            for scope in scopes:
                rows = slice(None) if scope == ALL else chunk == scope
                acc = sums[scope]
                if mean is not None:
                    acc[0] = acc[0] + mean[rows].sum(0, dtype=np.float64)
                    acc[1] = acc[1] + sq[rows].sum(0, dtype=np.float64)
                acc[2] += int(np.count_nonzero(rows)) if scope != ALL else len(chunk)
    finally:
        for fh in files.values():
            fh.close()
    channels = _write_moments(out / "moments.npz", backbone, bns, scopes, sums)
    head = backbone.head()
    if head is not None:  # ImageNet class prototypes, for the profile step
        save_npy(out / "imagenet_head.npy", head.weight.detach().float().cpu().numpy())
    meta = FeatureMeta(
        model=backbone.spec,
        weights_digest=backbone.weights_digest,
        data_config=backbone.data_config.as_dict(),
        pool_grid=settings.pool_grid,
        layers=[
            LayerInfo(ly.name, ly.channels, ly.reduction, dims[ly.name]) for ly in backbone.layers
        ],
        outputs=dims,
        moment_points=points,
        moments=MomentLayout([*scopes, IMAGENET], bns, channels),
        images=len(records),
    )
    write_json(out / "meta.json", meta.to_dict())
    return meta, stats


class RecordedBackbone:
    """The backbone that made a feature table, as its ``meta.json`` records it: ``spec``
    and ``weights_digest`` at once, without PyTorch; anything else (the network, its
    layers, its preprocessing) builds it on first use, once, and checks that its weights
    are those the features were computed with."""

    def __init__(self, meta: FeatureMeta, name: str, arch: str | None = None) -> None:
        self.spec, self.weights_digest = meta.model, meta.weights_digest
        self._name, self._arch, self._meta = name, arch, meta
        self._built: Backbone | None = None

    @property
    def data_config(self) -> Any:
        """The preprocessing the features were computed with, as recorded: no network built
        (the no-transfer baseline's predictor needs this alone)."""
        from transferpilot.zoo import DataConfig  # defers torch

        raw = self._meta.data_config
        return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._built is None:
            from transferpilot.zoo import create_backbone  # defers torch and timm

            built = create_backbone(self._name, arch=self._arch)
            if built.weights_digest != self.weights_digest:
                raise ModelError(
                    f"{self._name}: its weights are not those the features were computed "
                    "with (weights digest differs): run the extract stage again"
                )
            self._built = built
        return getattr(self._built, attr)


@dataclass(frozen=True)
class FeatureTable:
    """What later stages read: the records, and features aligned with them."""

    records: list[Record]
    meta: FeatureMeta
    root: Path

    @classmethod
    def open(cls, root: Path, manifest: Path) -> FeatureTable:
        """The folder :func:`write_table` wrote, with the manifest its rows follow."""
        meta = FeatureMeta.from_dict(read_json(root / "meta.json", produced_by="extract"))
        return cls(read_manifest(manifest), meta, root)

    def backbone(self, name: str, arch: str | None = None) -> RecordedBackbone:
        """The backbone ``name`` that made these features, built only when asked for more
        than its name and digest (:class:`RecordedBackbone`)."""
        return RecordedBackbone(self.meta, name, arch)

    def array(self, name: str) -> np.ndarray:
        """(N, D) features of one output, memory-mapped; a joined name
        (``blocks.6+pre_logits``) gives its layers' features side by side, in memory."""
        if JOIN in name:
            return np.hstack([self.array(part) for part in parts(name)])
        return np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every output, memory-mapped."""
        return {name: self.array(name) for name in self.meta.outputs}

    def moments(self, scope: str = ALL) -> dict[str, Moments]:
        """``{BatchNorm: Moments}`` over ``scope`` (``all``, a split, or ``imagenet``)."""
        layout = self.meta.moments
        if scope not in layout.scopes:
            return {}
        i = layout.scopes.index(scope)
        with np.load(self.root / "moments.npz", allow_pickle=False) as npz:
            mean, var, count = npz["mean"][i], npz["var"][i], int(npz["count"][i])
        ends = np.cumsum([0, *layout.channels])
        return {
            bn: Moments(mean[a:b], var[a:b], count)
            for bn, a, b in zip(layout.points, ends[:-1], ends[1:], strict=True)
        }

    def prototypes(self) -> np.ndarray | None:
        """The ImageNet classifier's weight rows (classes, D), when its head is linear."""
        path = self.root / "imagenet_head.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    @property
    def split(self) -> np.ndarray:
        """Each row's split (N,)."""
        return np.asarray([r.split for r in self.records])

    @property
    def labels(self) -> np.ndarray:
        """Each row's label (N,)."""
        return np.asarray([r.label for r in self.records])
