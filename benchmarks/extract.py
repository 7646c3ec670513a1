"""Benchmark: cached feature extraction against a plain forward pass and a naive loop.

    python benchmarks/extract.py [--images N] [--repeats R] [--data DIR] [--quick]

On ``../shared/datasets/imagenette`` when present (else generated 224x224
JPEGs), with the default model, one run measures side by side:

* cold extraction (empty feature cache; the exported graph kept, its one-off
  export timed on its own) with the CPU's default runtime, ONNX Runtime, and
  with eager PyTorch (``extract.runtime: torch``);
* the model's own eager forward pass on pre-decoded tensors of the same batch size;
* a naive loop in the style of the PyTorch transfer-learning tutorial (PIL
  open + transform + forward per batch, no workers): target cold >= 2.5x faster;
* the roofline: this CPU's fp32 GEMM rate (a 2048x2048 matmul, timed) over the
  model's FLOPs per image (counted by PyTorch): target cold >= 50% of it;
* a warm re-run (everything cached): target >= 20x faster than cold;
* 10% new images on top of a cache holding the other 90%: target <= 0.2x cold.

Prints a table and writes ``benchmarks/results/extract.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import SHARED, machine, median, print_table, stamp, timed, write_results
from transferpilot.config import ExtractParams
from transferpilot.features import extract_features
from transferpilot.images import open_rgb
from transferpilot.zoo import create_backbone


def dataset_items(data: Path | None, n: int, tmp: Path) -> tuple[str, list[tuple[Path, str]]]:
    folder = data or SHARED / "imagenette"
    if folder.is_dir():
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"}
        )
        random.Random(0).shuffle(files)
        files = files[:n]
        label = f"{folder.name} ({len(files)} images)"
    else:
        rng = np.random.default_rng(0)
        files = []
        from PIL import Image

        for i in range(n):
            base = rng.integers(0, 255, size=(28, 28, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((224, 224), Image.Resampling.BICUBIC)
            path = tmp / "generated" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=90)
            files.append(path)
        label = f"generated 224x224 JPEGs ({n} images)"
    return label, [(p, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


def naive_loop(backbone, items, batch_size: int) -> None:
    """The tutorial's way: decode, transform and forward, batch by batch, in one process."""
    transform = backbone.data_config.transform()
    model = backbone.model.eval()
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = [transform(open_rgb(p)) for p, _ in items[start : start + batch_size]]
            model(torch.stack(batch))


def roofline(backbone, batch_size: int) -> dict[str, float]:
    """Images/s this CPU could reach at its fp32 GEMM rate, from the model's FLOP count."""
    import time

    from torch.utils.flop_counter import FlopCounterMode

    size = backbone.data_config.input_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        backbone.model.eval()(torch.rand(1, *size))
    flops = counter.get_total_flops()
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    gemm = 2 * 2048**3 / best
    return {"flops_per_image": flops, "gemm_flops_per_s": gemm, "images_per_s": gemm / flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="128 images, 1 repeat (CI-sized)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = 128, 1
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    try:
        label, items = dataset_items(args.data, args.images, tmp)
        backbone = create_backbone(args.model)
        opts = ExtractParams(batch_size=args.batch_size, cache_dir=tmp / "cache")
        eager = opts.model_copy(update={"runtime": "torch"})
        n = len(items)

        def cold(settings: ExtractParams = opts) -> None:
            """An empty feature cache; an exported graph (made once per model) is kept."""
            for key in (tmp / "cache").glob("*"):
                shutil.rmtree(key / "shards", ignore_errors=True)
                (key / "index.jsonl").unlink(missing_ok=True)
            extract_features(backbone, items, settings)

        first_t, _ = timed(lambda: extract_features(backbone, items[:1], opts), 1)
        peak = roofline(backbone, args.batch_size)

        # Pre-decoded tensors, forward only, same batch size and memory format as extraction.
        transform = backbone.data_config.transform()
        tensors = torch.stack([transform(open_rgb(p)) for p, _ in items])
        tensors = tensors.contiguous(memory_format=torch.channels_last)
        backbone.model.to(memory_format=torch.channels_last)

        def forward_only() -> None:
            with torch.inference_mode():
                for start in range(0, n, args.batch_size):
                    backbone.features(tensors[start : start + args.batch_size])

        forward_only()  # warm-up: first-call allocations and kernel selection
        fwd_t, _ = timed(forward_only, args.repeats)
        cold_t, _ = timed(cold, args.repeats)
        eager_t, _ = timed(lambda: cold(eager), args.repeats)
        backbone.model.to(memory_format=torch.contiguous_format)
        naive_t, _ = timed(lambda: naive_loop(backbone, items, args.batch_size), args.repeats)
        warm_t, _ = timed(
            lambda: extract_features(backbone, items, opts),
            args.repeats,
        )
        cut = n - n // 10

        def incremental() -> None:
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            extract_features(backbone, items[:cut], opts)
            start = __import__("time").perf_counter()
            extract_features(backbone, items, opts)
            inc_times.append(__import__("time").perf_counter() - start)

        inc_times: list[float] = []
        for _ in range(args.repeats):
            incremental()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cold_s, fwd_s, naive_s = median(cold_t), median(fwd_t), median(naive_t)
    eager_s = median(eager_t)
    warm_s, inc_s = median(warm_t), median(inc_times)
    results = {
        "dataset": label,
        "model": args.model,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "machine": machine(),
        "seconds": {
            "cold": cold_t,
            "cold_eager": eager_t,
            "graph_export_and_one_image": first_t,
            "forward_only": fwd_t,
            "naive": naive_t,
            "warm": warm_t,
            "ten_percent_new": inc_times,
        },
        "images_per_s": {
            "cold": n / cold_s,
            "cold_eager": n / eager_s,
            "forward_only": n / fwd_s,
            "naive": n / naive_s,
        },
        "roofline": peak,
        "ratios": {
            "cold_vs_forward_only": fwd_s / cold_s,
            "speedup_vs_naive": naive_s / cold_s,
            "eager_speedup_vs_naive": naive_s / eager_s,
            "cold_vs_roofline": n / cold_s / peak["images_per_s"],
            "cold_vs_warm": cold_s / warm_s,
            "ten_percent_new_vs_cold": inc_s / cold_s,
        },
        "targets": {
            "speedup_vs_naive": ">= 2.5",
            "cold_vs_roofline": ">= 0.5",
            "cold_vs_warm": ">= 20",
            "ten_percent_new_vs_cold": "<= 0.2",
        },
    }
    r = results["ratios"]
    rows = [
        ["naive tutorial loop (eager)", naive_s, n / naive_s, "reference", ""],
        ["eager forward only (pre-decoded)", fwd_s, n / fwd_s, "", ""],
        [
            "cold extraction (ONNX Runtime)",
            cold_s,
            n / cold_s,
            f"{r['speedup_vs_naive']:.2f}x naive; {r['cold_vs_roofline']:.0%} of roofline",
            ">= 2.5x; >= 50%",
        ],
        [
            "cold extraction (PyTorch)",
            eager_s,
            n / eager_s,
            f"{r['eager_speedup_vs_naive']:.2f}x naive",
            "",
        ],
        [
            f"roofline ({peak['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s GEMM, "
            f"{peak['flops_per_image'] / 1e9:.2f} GFLOP/image)",
            n / peak["images_per_s"],
            peak["images_per_s"],
            "",
            "",
        ],
        ["graph export + 1 image (once per model)", median(first_t), "", "", ""],
        ["warm re-run", warm_s, n / warm_s, f"{r['cold_vs_warm']:.0f}x faster than cold", ">= 20x"],
        [
            "10% new images",
            inc_s,
            (n - cut) / inc_s,
            f"{r['ten_percent_new_vs_cold']:.2f}x cold",
            "<= 0.2x",
        ],
    ]
    m = results["machine"]
    title = (
        f"Feature extraction, {args.model}, {label}, batch {args.batch_size}, median of "
        f"{args.repeats} (measured {stamp(m)} on {m['cpu']}, {m['cores']} cores)"
    )
    table = print_table(title, ["run", "seconds", "images/s", "ratio", "target"], rows)
    write_results("extract_quick" if args.quick else "extract", results, table)


if __name__ == "__main__":
    main()
