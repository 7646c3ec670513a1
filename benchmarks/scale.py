"""Benchmark: many small images through prepare and extract — memory bounded, time linear.

    python -m benchmarks.scale [--sizes 5000 20000 50000] [--quick]

For each size, generated 16x16 PNGs (10 classes, every file distinct) go through
the same library calls as the ``prepare`` and ``extract`` stages — intake (every
file decoded once, the manifest) and streamed extraction into ``<output>.npy``
files — with a tiny randomly initialised EfficientNet at 64 px, in a child
process whose peak resident memory is read from the kernel (``wait4``).
Features go to cache shards as they are computed and are written out in
chunks, so peak memory should stay flat while time grows with the images.
Writes ``benchmarks/results/scale.{json,md}`` (``--quick``: ``scale_quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import machine, print_table, stamp, write_results


def generate(root: Path, n: int, classes: int = 10) -> None:
    """``n`` distinct 16x16 RGB PNGs in ``classes`` class folders."""
    from PIL import Image

    rng = np.random.default_rng(n)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, size=(classes, 1, 1, 3))
    for i in range(n):
        c = i % classes
        noise = rng.integers(-30, 31, size=(16, 16, 3))
        pixels = np.clip(base[c] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"c{c}" / f"{i:06d}.png")


def tiny_backbone():
    import timm
    import torch

    from transferpilot.zoo._timm import timm_backbone

    torch.manual_seed(0)
    model = timm.create_model(
        "test_efficientnet",
        pretrained=False,
        num_classes=1000,
        pretrained_cfg_overlay={"input_size": (3, 64, 64)},
    )
    return timm_backbone(model, spec="tiny", weights_digest="random-0", weights_source="random")


def child(images: Path, work: Path) -> dict:
    """prepare + extract in this process; prints timings as JSON."""
    from transferpilot.config import ExtractParams, PrepareParams
    from transferpilot.features import write_table
    from transferpilot.intake import prepare_dataset

    start = time.perf_counter()
    intake = prepare_dataset(PrepareParams(source=images, workers=-1))
    prepare_s = time.perf_counter() - start
    records = intake.records
    out = work / "features"
    out.mkdir(parents=True)
    start = time.perf_counter()
    _, stats = write_table(
        tiny_backbone(),
        records,
        out,
        ExtractParams(cache_dir=work / "cache", batch_size=256, workers=0, shard_size=2048),
    )
    extract_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in out.glob("*.npy"))
    return {
        "images": len(records),
        "prepare_s": prepare_s,
        "extract_s": extract_s,
        "computed": stats.computed,
        "features_mb": size / 2**20,
    }


def measure(n: int, tmp: Path) -> dict:
    images = tmp / f"images{n}"
    start = time.perf_counter()
    generate(images, n)
    generate_s = time.perf_counter() - start
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale", "--child", str(images), str(tmp / f"work{n}")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child failed for {n} images (status {status})")
    result = json.loads(output.strip().splitlines()[-1])
    return result | {"generate_s": generate_s, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--quick", action="store_true", help="1,000 and 4,000 images")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    sizes = [1000, 4000] if args.quick else args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(n, Path(tmp)) for n in sizes]
    first = results[0]
    rows = []
    for r in results:
        per_k = 1000 * (r["prepare_s"] + r["extract_s"]) / r["images"]
        rows.append(
            [
                f"{r['images']:,}",
                f"{r['prepare_s']:.1f}",
                f"{r['extract_s']:.1f}",
                f"{r['images'] / r['extract_s']:.0f}",
                f"{per_k:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] - first['peak_rss_mb']:+.0f}",
                f"{r['features_mb']:.0f}",
            ]
        )
    m = machine()
    table = print_table(
        f"Scale: 16x16 PNGs, prepare + streamed extract, tiny EfficientNet at 64 px, CPU — "
        f"{stamp(m)}, {m['cpu']}, {m['cores']} cores",
        ["images", "prepare s", "extract s", "extract img/s", "s per 1k images",
         "peak RSS MB", "vs smallest", "features on disk MB"],
        rows,
    )  # fmt: skip
    write_results(
        "scale_quick" if args.quick else "scale", {"machine": m, "results": results}, table
    )


if __name__ == "__main__":
    main()
