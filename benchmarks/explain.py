"""Benchmark: how fast are the maps, and do they point at what the model used?

    python -m benchmarks.explain [--images 100] [--threads 2]

Three models, each explained as ``predict --explain`` and the report explain them:

* softmax regression on Lite0's CNN codes of flowers11 and of resisc8 (``../shared``),
  fitted on their training images as the ``linear`` strategy fits it: the map is CAM,
  Grad-CAM at the network's last feature map, one backward pass through the head;
* the pretrained Lite0 itself on imagenette (ImageNet classes, so its own head is a
  trained classifier): Grad-CAM at its last feature map, as for a fine-tuned network
  (the backward pass goes from the class score down to that map, no further).

Speed: milliseconds per image at 224 px on ``--threads`` cores, one image at a time
(median of 20) and in batches of 8 (what ``Explainer.explain_files`` uses). Target
(issue #31): <= 300 ms per image on 2 cores.

Sanity (deletion): on ``--images`` val images spread over the classes, the predicted
class's probability before and after the 20 % of pixels the map ranks highest are
deleted, against the same for a random 20 %: of pixels, and of a random map at the
map's own resolution upsampled the same way (blobs of the shape a map's have). Deleted
twice over: imputed from the kept pixels around them (ROAD, Rong et al. 2022: the
headline) and set to the normalisation mean (scattered mean-grey holes are a texture the
network never saw, and punish the random pixels for how they are deleted, not where).
Target: the map's deletion lowers the probability more than a random one, on average
over the set. Writes ``benchmarks/results/explain.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import SHARED, publish
from transferpilot.config import ExtractParams, PrepareParams, TrainParams
from transferpilot.estimators import LinearClassifier
from transferpilot.explain import Explainer
from transferpilot.features import FeatureTable, write_table
from transferpilot.heads import FeatureClassifier, NetworkClassifier, head_module
from transferpilot.intake import prepare_dataset
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.zoo import create_backbone

SHARE = 0.2


def evenly(n: int, total: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(n, total)).astype(int))


def head_explainer(backbone, folder: Path, cache: Path) -> tuple[Explainer, list[Path]]:
    """Softmax regression on the CNN codes of ``folder``'s training images; its val paths."""
    intake = prepare_dataset(PrepareParams(source=folder))
    train = [r for r in intake.records if r.split == "train"]
    with tempfile.TemporaryDirectory() as tmp:
        meta, _ = write_table(backbone, train, Path(tmp), ExtractParams(cache_dir=cache))
        table = FeatureTable(train, meta, Path(tmp))
        head = LinearClassifier.from_settings("linear", TrainParams()).fit(
            table.array(PRE_LOGITS), table.labels
        )
    config = backbone.data_config
    module = FeatureClassifier(backbone.features, PRE_LOGITS, head_module(head), config)
    held = [r.path for r in intake.records if r.split == "val"]
    return Explainer(module, config, [str(c) for c in head.classes_]), held


def network_explainer(backbone, folder: Path) -> tuple[Explainer, list[Path]]:
    intake = prepare_dataset(PrepareParams(source=folder))
    module = NetworkClassifier(backbone.model, backbone.data_config)
    held = [r.path for r in intake.records if r.split == "val"]
    return Explainer(module, backbone.data_config, backbone.class_names), held


def load(explainer: Explainer, paths: list[Path]) -> torch.Tensor:
    from transferpilot.images import open_rgb

    return torch.as_tensor(np.stack([explainer.pixels(open_rgb(p)) for p in paths]))


def speed(explainer: Explainer, images: torch.Tensor) -> dict[str, float]:
    one = []
    for i in range(min(20, len(images))):
        start = time.perf_counter()
        explainer.heat(images[i : i + 1])
        one.append(time.perf_counter() - start)
    batched = []
    for start_row in range(0, min(32, len(images)), 8):
        start = time.perf_counter()
        explainer.heat(images[start_row : start_row + 8])
        batched.append((time.perf_counter() - start) / len(images[start_row : start_row + 8]))
    return {
        "ms_one": 1000 * statistics.median(one),
        "ms_batched": 1000 * statistics.median(batched),
    }


def top_share(rank: torch.Tensor) -> torch.Tensor:
    """(B, H, W) True at the ``SHARE`` of pixels ranked highest."""
    flat = rank.flatten(1)
    top = flat.topk(int(SHARE * flat.shape[1]), dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True).view_as(rank)


def filled_with_mean(images: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None], mean.view(1, 3, 1, 1), images)


def filled_from_neighbours(images: torch.Tensor, mask: torch.Tensor, _mean=None) -> torch.Tensor:
    """Deleted pixels imputed from the kept pixels around them (normalised convolution,
    the smallest of three windows with enough kept pixels): ROAD's point (Rong et al.
    2022) — a deleted pixel's shape must not carry information, nor scattered holes
    look like a texture the network never saw."""
    keep = (~mask).float()[:, None]
    out = images.clone()
    todo = mask.clone()
    for size in (5, 17, 65):
        total = F.avg_pool2d(images * keep, size, 1, size // 2, count_include_pad=False)
        share = F.avg_pool2d(keep, size, 1, size // 2, count_include_pad=False)
        ready = todo & (share[:, 0] > 0.1)
        out = torch.where(ready[:, None], total / share.clamp_min(1e-6), out)
        todo &= ~ready
    return torch.where(todo[:, None], images.mean((2, 3), keepdim=True), out)


def probability(explainer: Explainer, images: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        proba = explainer.module.logits(images).float().softmax(-1)
    return proba[torch.arange(len(target)), target].numpy()


def deletion(explainer: Explainer, images: torch.Tensor, grid: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor(explainer.config.mean)
    fills = {"imputed": filled_from_neighbours, "mean": filled_with_mean}
    drops: dict[str, list[float]] = {
        f"{rank} {fill}": [] for fill in fills for rank in ("map", "random pixels", "random blobs")
    }
    for start in range(0, len(images), 8):
        x = images[start : start + 8]
        proba, heat = explainer.heat(x)
        target = torch.as_tensor(proba.argmax(1))
        before = probability(explainer, x, target)
        blobs = F.interpolate(
            torch.rand(len(x), 1, grid, grid, generator=gen), size=x.shape[-2:], mode="bilinear"
        )[:, 0]
        ranks = {
            "map": torch.as_tensor(heat) + 1e-6 * torch.rand(heat.shape, generator=gen),
            "random pixels": torch.rand(heat.shape, generator=gen),
            "random blobs": blobs,
        }
        for name, rank in ranks.items():
            for fill, how in fills.items():
                after = probability(explainer, how(x, top_share(rank), mean), target)
                drops[f"{name} {fill}"] += list(before - after)
    out = {f"drop_{k.replace(' ', '_')}": float(np.mean(v)) for k, v in drops.items()}
    wins = np.array(drops["map imputed"]) > np.array(drops["random pixels imputed"])
    return out | {"map_beats_pixels_share": float(wins.mean()), "images": len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("data/cache/features"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    backbone = create_backbone("efficientnet_lite0")
    cases = [
        ("flowers11", "softmax regression on pre_logits", "head", SHARED / "flowers11"),
        ("resisc8", "softmax regression on pre_logits", "head", SHARED / "resisc8"),
        ("imagenette", "the pretrained network (ImageNet head)", "network", SHARED / "imagenette"),
    ]
    rows, results = [], []
    for name, model, kind, folder in cases:
        if kind == "head":
            explainer, held = head_explainer(backbone, folder, args.cache)
        else:
            explainer, held = network_explainer(backbone, folder)
        images = load(explainer, [held[i] for i in evenly(args.images, len(held))])
        grid = 7  # Lite0's last map at 224 px: the resolution a map ranks at
        timing = speed(explainer, images)
        sanity = deletion(explainer, images, grid)
        results.append(
            {"dataset": name, "model": model, "method": explainer.method} | timing | sanity
        )
        rows.append(
            [
                name,
                model,
                f"{timing['ms_one']:.0f}",
                f"{timing['ms_batched']:.0f}",
                sanity["images"],
                *(
                    f"{sanity[f'drop_{rank}_{fill}']:.3f}"
                    for fill in ("imputed", "mean")
                    for rank in ("map", "random_pixels", "random_blobs")
                ),
                f"{sanity['map_beats_pixels_share']:.2f}",
            ]
        )
    title = (
        f"Explanations at 224 px, {args.threads} threads: ms per image, and the predicted "
        f"class's probability lost when the {SHARE:.0%} of pixels a map ranks highest are "
        f"deleted (imputed from their neighbours, or set to the mean), against a random "
        f"{SHARE:.0%}"
    )
    header = [
        "dataset", "model explained", "ms, 1 image", "ms/image, batch 8", "images",
        "imputed: map", "random pixels", "random blobs",
        "mean: map", "random pixels", "random blobs", "map > pixels, imputed",
    ]  # fmt: skip
    publish("explain", title, header, rows, args, results)


if __name__ == "__main__":
    main()
