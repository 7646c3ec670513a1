"""The embedded default dataset: scikit-learn's handwritten digits as an ImageFolder.

It ships inside scikit-learn (no download): 1,797 8x8 grayscale digits in ten
classes. :func:`write_digits` writes them as PNGs, ``<out>/<digit>/<index>.png``,
so ``make run`` has a real image folder to work on with no input and no network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DIGITS_DIR = Path("data/digits")


def write_digits(out: Path = DEFAULT_DIGITS_DIR, *, scale: int = 4) -> Path:
    """Write the digits to ``out`` (once: an existing folder is left as it is).

    Each 8x8 image (values 0..16) becomes an 8-bit grayscale PNG enlarged
    ``scale`` times with nearest-neighbour sampling (32x32 by default), so the
    pixels are exactly the original ones. The folder appears atomically: it is
    written under a temporary name and renamed into place.

    >>> write_digits(Path("data/digits"))  # doctest: +SKIP
    PosixPath('data/digits')
    """
    from sklearn.datasets import load_digits

    out = Path(out)
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
            gray = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
            img = Image.fromarray(gray, mode="L").resize(
                (8 * scale, 8 * scale), Image.Resampling.NEAREST
            )
            class_dir = tmp / str(int(target))
            class_dir.mkdir(exist_ok=True)
            img.save(class_dir / f"{index:04d}.png", optimize=False)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
