"""How big the dataset is: images, classes, per-class counts, imbalance, image sizes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transferpilot.intake import Record


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max())}


@dataclass(frozen=True)
class SizeProfile:
    """Counts are of the training split; sizes and modes of every image."""

    n_images: int
    n_train: int
    n_classes: int
    train_per_class: dict[str, int]
    images_per_class: dict[str, float]
    imbalance: float
    width: dict[str, float]
    height: dict[str, float]
    modes: dict[str, int]


def training_size(size: SizeProfile, model_size: int, *, floor: int = 64) -> int:
    """The square resolution fine-tuning trains at: the model's, unless the images are small.

    Upsampling a 28-px digit to 224 px adds no detail, only compute (about 12x
    the pixels of 64 px). Images whose median short side is under half the
    model's resolution train at twice that side, rounded up to a multiple of 32,
    never below ``floor``: 28 px -> 64, 100 px -> 224 (the model's).
    """
    short = min(size.width["median"], size.height["median"])
    if 2 * short >= model_size:
        return model_size
    return int(min(model_size, max(floor, 32 * np.ceil(2 * short / 32))))


def size_profile(records: Sequence[Record]) -> SizeProfile:
    """Summarise ``records`` (manifest rows).

    ``images_per_class`` (min / median / max) and ``imbalance`` (largest class
    over smallest) count training images, since they decide what can be trained.
    """
    train = [r for r in records if r.split == "train"]
    classes = sorted({r.label for r in records})
    counts = Counter(r.label for r in train)
    per_class = {c: counts.get(c, 0) for c in classes}
    nonzero = [n for n in per_class.values() if n] or [0]
    return SizeProfile(
        n_images=len(records),
        n_train=len(train),
        n_classes=len(classes),
        train_per_class=per_class,
        images_per_class=_spread(list(per_class.values())),
        imbalance=float(max(nonzero) / min(nonzero)) if min(nonzero) else float("inf"),
        width=_spread([r.width for r in records]),
        height=_spread([r.height for r in records]),
        modes=dict(Counter(r.mode for r in records).most_common()),
    )
