"""GPU check: the CUDA extraction path and one fine-tuning epoch on generated images.

    python benchmarks/gpu_check.py [--images 3000] [--batch-size 128]

Prints images/s and peak GPU memory of the AMP + channels_last extraction path,
the same for plain fp32 (NCHW), the speed-up, and one mixed-precision
fine-tuning epoch; writes ``benchmarks/results/gpu_check.json``.
Needs a CUDA GPU (exits 2 without one).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._common import machine, print_table, stamp, write_results
from transferpilot.config import ExtractParams, TrainParams
from transferpilot.features import extract_features
from transferpilot.zoo import create_backbone


def generate(folder: Path, n: int) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        small = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(small).resize((256, 256), Image.Resampling.BILINEAR).save(path, quality=90)
        items.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return items


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU check needs one", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    tmp = Path(tempfile.mkdtemp(prefix="tp-gpu-"))
    rows, runs = [], {}
    try:
        items = generate(tmp, args.images)
        backbone = create_backbone(args.model)
        for label, amp, cl in (("AMP + channels_last", True, True), ("fp32, NCHW", False, False)):
            opts = ExtractParams(
                batch_size=args.batch_size, workers=args.workers, amp=amp, channels_last=cl
            )
            backbone.model.to(memory_format=torch.contiguous_format)
            warm = items[: args.batch_size * 2]
            extract_features(
                backbone, warm, opts.model_copy(update={"cache_dir": tmp / f"warm-{amp}"}), device
            )
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            feats = extract_features(
                backbone, items, opts.model_copy(update={"cache_dir": tmp / f"c-{amp}"}), device
            )
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**20
            runs[label] = {
                "seconds": seconds,
                "images_per_s": len(items) / seconds,
                "peak_mib": peak,
                "batch_size": feats.stats.batch_size,
            }
            rows.append([label, seconds, len(items) / seconds, f"{peak:.0f}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        # One mixed-precision fine-tuning epoch (two arbitrary classes over the same images).
        from transferpilot.finetune import Finetuner

        paths = [p for p, _ in items]
        labels = ["even" if i % 2 == 0 else "odd" for i in range(len(paths))]
        config = TrainParams(
            epochs=1, lr_ratio=0.1, batch_size=args.batch_size, workers=args.workers, amp=True
        )
        torch.cuda.reset_peak_memory_stats()
        tuner = Finetuner(backbone, config, device=device).fit(
            paths, labels, paths[:256], labels[:256]
        )
        epoch = tuner.result_.history[0]
        peak = torch.cuda.max_memory_allocated() / 2**20
        runs["finetune epoch (AMP)"] = {
            "seconds": epoch.seconds,
            "images_per_s": epoch.images_per_s,
            "peak_mib": peak,
        }
        rows.append(["finetune epoch (AMP)", epoch.seconds, epoch.images_per_s, f"{peak:.0f}"])
    speedup = runs["AMP + channels_last"]["images_per_s"] / runs["fp32, NCHW"]["images_per_s"]
    rows.append(["speed-up of AMP + channels_last", "", f"{speedup:.2f}x", ""])
    m = machine()
    title = (
        f"GPU extraction, {args.model}, {args.images} generated images, batch "
        f"{args.batch_size}, {args.workers} workers ({stamp(m)}, {m['cuda']})"
    )
    table = print_table(title, ["path", "seconds", "images/s", "peak GPU MiB"], rows)
    write_results("gpu_check", {"machine": m, "runs": runs, "speedup": speedup}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
