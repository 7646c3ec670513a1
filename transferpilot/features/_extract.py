"""The forward pass that fills the feature cache: batched, overlapped with decoding.

One pass per image yields every candidate layer (pooled), the CNN codes
(``pre_logits``), the ImageNet logits and the BatchNorm-input moments.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, Dataset

from transferpilot.config import ExtractParams, resolve_workers
from transferpilot.errors import DataError
from transferpilot.features._cache import CacheKey, FeatureCache
from transferpilot.features._moments import MomentRecorder, moment_points, unique_points
from transferpilot.images import open_rgb
from transferpilot.layer_names import PIXEL_GRID, PIXELS
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


def cache_key(backbone: Backbone, pool_grid: int, runtime: str = "torch") -> CacheKey:
    """The cache key of a backbone's features with a given pooling and runtime."""
    return CacheKey(
        model=backbone.spec,
        weights_digest=backbone.weights_digest,
        preprocessing=backbone.data_config.as_dict(),
        pool_grid=pool_grid,
        runtime=runtime,
    )


def output_names(backbone: Backbone) -> list[str]:
    """The per-image feature arrays: candidate layers, CNN codes, logits, then the
    no-transfer baseline's input (:data:`~transferpilot.layer_names.PIXELS`)."""
    return [layer.name for layer in backbone.layers] + [PRE_LOGITS, LOGITS, PIXELS]


def pixel_codes(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) network input -> (B, 3 * PIXEL_GRID**2): the baseline's raw pixels."""
    return F.adaptive_avg_pool2d(x.float(), PIXEL_GRID).flatten(1)


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


class ForwardOutputs(nn.Module):
    """One forward pass, everything the cache keeps: each output of :func:`output_names`
    pooled (B, D), then each BatchNorm point's per-image channel mean and mean square.

    The one implementation of that arithmetic: PyTorch runs it, and it is what the
    ONNX graph is exported from. ``keys`` names the tuple it returns, in order.
    """

    def __init__(self, backbone: Backbone, pool_grid: int) -> None:
        super().__init__()
        self.features, self.model, self.grid = backbone.features, backbone.model, pool_grid
        self.names = output_names(backbone)
        points = moment_points(backbone.model, [ly.name for ly in backbone.layers])
        self.recorder = MomentRecorder(unique_points(points))
        self.keys = self.names + [
            prefix + bn for bn in self.recorder.names for prefix in (MEAN_PREFIX, SQ_PREFIX)
        ]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self.recorder.attached(self.model):
            out = {**self.features(x), PIXELS: pixel_codes(x)}
            moments = self.recorder.pop()
        pooled = [pool(out[name], self.grid) for name in self.names]
        return (*pooled, *(m for bn in self.recorder.names for m in moments[bn]))


class _Runner:
    """Runs the model on batches, halving the micro-batch after an out-of-memory error."""

    def __init__(self, backbone: Backbone, device: torch.device, opts: ExtractParams) -> None:
        self.backbone, self.device, self.opts = backbone, device, opts
        self.micro = opts.batch_size
        self.outputs = ForwardOutputs(backbone, opts.pool_grid)
        # channels_last is faster on CUDA and, measured here, on CPU too (~1.4x for Lite0).
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        backbone.model.to(device).eval()
        if self.memory_format is torch.channels_last:
            backbone.model.to(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        x = x.to(self.device, non_blocking=True).to(memory_format=self.memory_format)
        with torch.inference_mode(), _autocast(self.device, self.opts.amp):
            out = self.outputs(x)
        return {k: v.float().cpu().numpy() for k, v in zip(self.outputs.keys, out, strict=True)}

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


class _OrtRunner:
    """The same outputs from the backbone's ONNX graph, run with ONNX Runtime on the CPU
    (about 3x eager PyTorch on 2 cores for Lite0). The graph is exported once per cache key
    and kept beside the cache's shards."""

    GRAPH = "forward.onnx"

    def __init__(
        self, backbone: Backbone, cache: FeatureCache, opts: ExtractParams, threads: int | None
    ) -> None:
        import onnxruntime as ort

        self.outputs = ForwardOutputs(backbone, opts.pool_grid)
        self.micro = opts.batch_size
        path = forward_graph(backbone, cache, opts, self.outputs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # a damaged graph file: export it again
            path.unlink(missing_ok=True)
            path = forward_graph(backbone, cache, opts, self.outputs)
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        out = self.session.run(None, {"image": x.numpy()})
        return dict(zip(self.outputs.keys, out, strict=True))


def forward_graph(
    backbone: Backbone,
    cache: FeatureCache,
    opts: ExtractParams,
    outputs: ForwardOutputs | None = None,
) -> Path:
    """The cache key's ONNX graph, exported on first use; processes that start at once
    (Dask workers) wait for the one that exports it."""
    path = cache.dir / _OrtRunner.GRAPH
    if not path.is_file():
        with FileLock(cache.dir / "export.lock"):
            if not path.is_file():
                outputs = outputs or ForwardOutputs(backbone, opts.pool_grid)
                export_forward(outputs, backbone.data_config.input_size, path)
    return path


def export_forward(outputs: ForwardOutputs, input_size: Sequence[int], path: Path) -> Path:
    """Export :class:`ForwardOutputs` as ONNX (batch dimension dynamic), atomically."""
    from transferpilot._onnx import onnx_export

    outputs.model.to("cpu", memory_format=torch.contiguous_format)
    return onnx_export(outputs, torch.rand(2, *input_size), path, outputs.keys)


def resolve_runtime(requested: str, device: torch.device) -> str:
    """``auto``: ONNX Runtime on the CPU, PyTorch on CUDA or MPS (AMP, channels_last)."""
    if requested == "auto":
        return "onnxruntime" if device.type == "cpu" else "torch"
    if requested == "onnxruntime" and device.type != "cpu":
        raise DataError(f"extract.runtime onnxruntime runs on the CPU; the device is {device}")
    return requested


def extract_to_cache(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    cache: FeatureCache,
    *,
    device: torch.device,
    opts: ExtractParams,
    lock: str = "extract",
    threads: int | None = None,
) -> ExtractStats:
    """Compute and cache features for every ``(path, sha256)`` not cached yet.

    Decoding runs in ``opts.workers`` DataLoader processes while the model runs
    here; finished rows are flushed to a shard every ``opts.shard_size`` images,
    so a killed run keeps what it completed. ``lock`` names the extraction lock (one
    per shard when shards run side by side); ``threads`` caps ONNX Runtime's threads
    (default: every core).
    """
    start = time.perf_counter()
    with cache.extraction_lock(lock):
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
        runtime = resolve_runtime(opts.runtime, device)
        if runtime == "onnxruntime":
            runner: _Runner | _OrtRunner = _OrtRunner(backbone, cache, opts, threads)
        else:
            runner = _Runner(backbone, device, opts)
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
            "features: %d of %d images to compute on %s with %s (batch %d, %d decode workers)",
            len(todo),
            unique,
            device,
            runtime,
            opts.batch_size,
            workers,
        )
        pending: list[dict[str, np.ndarray]] = []
        pending_shas: list[str] = []
        # In-process decoding (workers 0, as in a Dask worker) still overlaps the model:
        # the next batch is decoded in a thread while this one runs.
        batches: Iterator = iter(loader) if workers else _prefetched(iter(loader))
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


def _prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead; its errors are
    raised here, in order. Decoding (PIL) and the ONNX Runtime run release the GIL."""
    done = object()
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():  # the consumer may have stopped: never block for good
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer
            put(err)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _flush(cache: FeatureCache, pending: list[dict[str, np.ndarray]], shas: list[str]) -> None:
    if not shas:
        return
    arrays = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    cache.write_shard(list(shas), arrays)
    pending.clear()
    shas.clear()


def open_cache(
    backbone: Backbone, settings: ExtractParams, device: torch.device | None = None
) -> FeatureCache:
    """The feature cache of ``backbone`` with these settings on ``device``."""
    runtime = resolve_runtime(settings.runtime, device or torch.device("cpu"))
    return FeatureCache(settings.cache_dir, cache_key(backbone, settings.pool_grid, runtime))


def fill_cache(
    backbone: Backbone,
    items: Sequence[tuple[Path, str]],
    settings: ExtractParams,
    device: torch.device | None = None,
    *,
    lock: str = "extract",
    threads: int | None = None,
) -> tuple[FeatureCache, ExtractStats]:
    """Compute what ``settings.cache_dir`` lacks for ``(path, sha256)`` items; the cache.
    ``lock`` and ``threads``: see :func:`~transferpilot.features._extract.extract_to_cache`."""
    device = device or torch.device("cpu")
    cache = open_cache(backbone, settings, device)
    stats = extract_to_cache(
        backbone, items, cache, device=device, opts=settings, lock=lock, threads=threads
    )
    return cache, stats


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
