"""GPU check: the CUDA extraction path against the CPU's ONNX Runtime path, and one
fine-tuning epoch, on generated images.

    python -m benchmarks.gpu_check [--images 3000] [--batch-size 128] [--cpu-images 600]

On the GPU: extraction with AMP + channels_last, the same in plain fp32 (NCHW), and
one mixed-precision fine-tuning epoch — images/s and peak GPU memory. On the same
machine's CPU: extraction through ONNX Runtime (what ``extract.runtime: auto`` runs
where there is no GPU) on the first ``--cpu-images`` images, so that the table says
what the GPU buys over the CPU path. Every extraction is timed cold (a new cache) after
a warm-up on other images into the same cache (CUDA kernels, the ONNX graph export).
Writes ``benchmarks/results/gpu_check.{json,md}``.

Needs a CUDA GPU (exits 2 without one). ``--device cpu`` runs the same steps on the
CPU: a smoke run of this script (the test suite's), not a GPU measurement.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._common import machine, print_table, stamp, write_results
from transferpilot.config import ExtractParams, TrainParams
from transferpilot.features import extract_features
from transferpilot.zoo import create_backbone


def generate(folder: Path, n: int, start: int = 0) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(start)
    items = []
    for i in range(start, start + n):
        small = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(small).resize((256, 256), Image.Resampling.BILINEAR).save(path, quality=90)
        items.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return items


def _peak_mib(device: torch.device) -> float | None:
    """Peak GPU memory since the last reset, MiB (None on the CPU)."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def timed_extraction(
    backbone: Any,
    items: Sequence[tuple[Path, str]],
    warm: Sequence[tuple[Path, str]],
    opts: ExtractParams,
    device: torch.device,
    cache: Path,
) -> dict[str, Any]:
    """Extract ``warm`` (untimed), then ``items`` into the same cache (timed, all new)."""
    cuda = device.type == "cuda"
    opts = opts.model_copy(update={"cache_dir": cache})
    backbone.model.to(memory_format=torch.contiguous_format)
    extract_features(backbone, list(warm), opts, device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    feats = extract_features(backbone, list(items), opts, device)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if feats.stats.computed != len(items):
        raise RuntimeError(f"{feats.stats.computed} of {len(items)} images computed: not cold")
    return {
        "images": len(items),
        "seconds": seconds,
        "images_per_s": len(items) / seconds,
        "peak_mib": _peak_mib(device),
        "batch_size": feats.stats.batch_size,
    }


def finetune_epoch(
    backbone: Any, items: Sequence[tuple[Path, str]], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """One mixed-precision fine-tuning epoch (two arbitrary classes over the images)."""
    from transferpilot.finetune import Finetuner

    paths = [p for p, _ in items]
    labels = ["even" if i % 2 == 0 else "odd" for i in range(len(paths))]
    config = TrainParams(
        epochs=1, lr_ratio=0.1, batch_size=args.batch_size, workers=args.workers, amp=True
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tuner = Finetuner(backbone, config, device=device).fit(
        paths, labels, paths[: 2 * args.batch_size], labels[: 2 * args.batch_size]
    )
    epoch = tuner.result_.history[0]
    return {
        "images": len(paths),
        "seconds": epoch.seconds,
        "images_per_s": epoch.images_per_s,
        "peak_mib": _peak_mib(device),
    }


def _mib(peak: float | None) -> str:
    return "" if peak is None else f"{peak:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cpu-images", type=int, default=600, help="images for the CPU path")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU check needs one (--device cpu: a smoke run)",
              file=sys.stderr)  # fmt: skip
        return 2
    device = torch.device(args.device)
    cpu = torch.device("cpu")
    backbone = create_backbone(args.model, pretrained=not args.random_weights)
    tmp = Path(tempfile.mkdtemp(prefix="tp-gpu-"))
    runs: dict[str, dict[str, Any]] = {}
    try:
        items = generate(tmp, args.images)
        warm = generate(tmp, 2 * args.batch_size, start=args.images)
        for label, amp, cl in (("AMP + channels_last", True, True), ("fp32, NCHW", False, False)):
            opts = ExtractParams(
                batch_size=args.batch_size, workers=args.workers, amp=amp, channels_last=cl,
                runtime="torch",
            )  # fmt: skip
            runs[f"{device.type}, {label} (PyTorch)"] = timed_extraction(
                backbone, items, warm, opts, device, tmp / f"cache-{device.type}-{amp}"
            )
        cores = os.cpu_count() or 1
        ort_opts = ExtractParams(batch_size=32, workers=-1, runtime="onnxruntime")
        runs[f"cpu ({cores} cores), ONNX Runtime fp32"] = timed_extraction(
            backbone, items[: args.cpu_images], warm[:32], ort_opts, cpu, tmp / "cache-ort"
        )
        runs[f"{device.type}, fine-tuning epoch (AMP)"] = finetune_epoch(
            backbone, items, args, device
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {k: v["images_per_s"] for k, v in runs.items()}
    fast, plain, ort = (rate[k] for k in list(runs)[:3])
    summary = {"amp_speedup": fast / plain, "over_cpu_path": fast / ort}
    rows: list[list[Any]] = [
        [k, v["images"], v["seconds"], v["images_per_s"], _mib(v["peak_mib"])]
        for k, v in runs.items()
    ]
    rows.append(["speed-up of AMP + channels_last over fp32", "", "", f"{fast / plain:.2f}x", ""])
    rows.append([f"{device.type} (AMP) over the CPU path", "", "", f"{fast / ort:.2f}x", ""])
    m = machine()
    title = (
        f"GPU check, {args.model}, generated images, batch {args.batch_size}, "
        f"{args.workers} workers ({stamp(m)}, {m.get('cuda') or 'no CUDA: smoke run'})"
    )
    header = ["path", "images", "seconds", "images/s", "peak GPU MiB"]
    table = print_table(title, header, rows)
    write_results("gpu_check", {"machine": m, "runs": runs, **summary}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
