"""The forward pass that fills the feature cache: batched, overlapped with decoding.

One pass per image yields every candidate layer (pooled), the CNN codes
(``pre_logits``), the ImageNet logits and the BatchNorm-input moments.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from transferpilot.config import ExtractParams, resolve_workers
from transferpilot.errors import DataError
from transferpilot.features._cache import CacheKey, FeatureCache
from transferpilot.features._moments import MomentRecorder, moment_points, unique_points
from transferpilot.images import open_rgb
from transferpilot.progress import track
from transferpilot.zoo import LOGITS, PRE_LOGITS, Backbone

log = logging.getLogger(__name__)

MEAN_PREFIX = "bn_mean:"
SQ_PREFIX = "bn_sq:"


@dataclass(frozen=True)
class ExtractStats:
    """What one extraction did: images asked for, forward passes run, time taken."""

    requested: int
    unique: int
    computed: int
    seconds: float
    batch_size: int

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def cache_key(backbone: Backbone, pool_grid: int) -> CacheKey:
    """The cache key of a backbone's features with a given pooling."""
    return CacheKey(
        model=backbone.spec,
        weights_digest=backbone.weights_digest,
        preprocessing=backbone.data_config.as_dict(),
        pool_grid=pool_grid,
    )


def output_names(backbone: Backbone) -> list[str]:
    """The per-image feature arrays: candidate layers, then CNN codes and logits."""
    return [layer.name for layer in backbone.layers] + [PRE_LOGITS, LOGITS]


class _Images(Dataset):
    """Decode + preprocess in DataLoader workers; checks each file is what prepare saw.

    A file that cannot be used yields a blank tensor and an error message, which
    the main process raises as a :class:`DataError` (worker exceptions would
    arrive wrapped in a traceback).
    """

    def __init__(
        self, items: Sequence[tuple[Path, str]], transform: Callable, shape: tuple[int, ...]
    ) -> None:
        self.items, self.transform, self.shape = items, transform, shape

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        path, sha = self.items[i]
        try:
            data = Path(path).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                return torch.zeros(self.shape), i, f"{path} changed since the prepare stage"
            return self.transform(open_rgb(io.BytesIO(data))), i, ""
        except (OSError, SyntaxError, ValueError) as err:
            return torch.zeros(self.shape), i, f"{path}: cannot read ({err})"


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def pool(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * grid * grid) average-pooled; vectors pass through."""
    if x.ndim == 2:
        return x.float()
    return F.adaptive_avg_pool2d(x.float(), grid).flatten(1)


class _Runner:
    """Runs the model on batches, halving the micro-batch after an out-of-memory error."""

    def __init__(self, backbone: Backbone, device: torch.device, opts: ExtractParams) -> None:
        self.backbone, self.device, self.opts = backbone, device, opts
        self.micro = opts.batch_size
        self.names = output_names(backbone)
        points = moment_points(backbone.model, [ly.name for ly in backbone.layers])
        self.recorder = MomentRecorder(unique_points(points))
        # channels_last is faster on CUDA and, measured here, on CPU too (~1.4x for Lite0).
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format

    def _forward(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        x = x.to(self.device, non_blocking=True).to(memory_format=self.memory_format)
        with torch.inference_mode(), _autocast(self.device, self.opts.amp):
            out = self.backbone.features(x)
            moments = self.recorder.pop()
        arrays = {name: pool(out[name], self.opts.pool_grid).cpu().numpy() for name in self.names}
        for bn, (mean, sq) in moments.items():
            arrays[MEAN_PREFIX + bn] = mean.cpu().numpy()
            arrays[SQ_PREFIX + bn] = sq.cpu().numpy()
        return arrays

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        start = 0
        parts: list[dict[str, np.ndarray]] = []
        while start < len(x):
            chunk = x[start : start + self.micro]
            try:
                parts.append(self._forward(chunk))
            except torch.OutOfMemoryError:
                if self.micro == 1:
                    raise
                self.micro = max(1, self.micro // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory: batch size halved to %d", self.micro)
                continue
            start += len(chunk)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def extract_to_cache(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    cache: FeatureCache,
    *,
    device: torch.device,
    opts: ExtractParams,
) -> ExtractStats:
    """Compute and cache features for every ``(path, sha256)`` not cached yet.

    Decoding runs in ``opts.workers`` DataLoader processes while the model runs
    here; finished rows are flushed to a shard every ``opts.shard_size`` images,
    so a killed run keeps what it completed.
    """
    start = time.perf_counter()
    with cache.extraction_lock():
        todo_shas = set(cache.missing(sha for _, sha in items))
        todo: list[tuple[Path, str]] = []
        for path, sha in items:
            if sha in todo_shas:
                todo.append((path, sha))
                todo_shas.discard(sha)
        unique = len({sha for _, sha in items})
        if not todo:
            log.info("features: all %d images already cached", unique)
            return ExtractStats(len(items), unique, 0, time.perf_counter() - start, opts.batch_size)
        runner = _Runner(backbone, device, opts)
        backbone.model.to(device).eval()
        if runner.memory_format is torch.channels_last:
            backbone.model.to(memory_format=torch.channels_last)
        workers = resolve_workers(opts.workers)
        loader = DataLoader(
            _Images(todo, backbone.data_config.transform(), backbone.data_config.input_size),
            batch_size=opts.batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        log.info(
            "features: %d of %d images to compute on %s (batch %d, %d decode workers)",
            len(todo),
            unique,
            device,
            opts.batch_size,
            workers,
        )
        pending: list[dict[str, np.ndarray]] = []
        pending_shas: list[str] = []
        with runner.recorder.attached(backbone.model):
            batches: Iterator = iter(loader)
            for x, idx, errors in track(
                batches,
                total=len(todo),
                description="extracting",
                logger=log,
                count=lambda batch: len(batch[1]),
            ):
                bad = [e for e in errors if e]
                if bad:
                    _flush(cache, pending, pending_shas)
                    raise DataError(f"{bad[0]}; re-run the prepare stage")
                pending.append(runner(x))
                pending_shas.extend(todo[int(i)][1] for i in idx)
                if len(pending_shas) >= opts.shard_size:
                    _flush(cache, pending, pending_shas)
            _flush(cache, pending, pending_shas)
        seconds = time.perf_counter() - start
        return ExtractStats(len(items), unique, len(todo), seconds, runner.micro)


def _flush(cache: FeatureCache, pending: list[dict[str, np.ndarray]], shas: list[str]) -> None:
    if not shas:
        return
    arrays = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    cache.write_shard(list(shas), arrays)
    pending.clear()
    shas.clear()
