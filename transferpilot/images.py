"""Reading images: one loader for intake, prediction and feature extraction.

:func:`open_rgb` turns any image Pillow can decode into an 8-bit RGB image the
same way everywhere: EXIF orientation applied, the first frame of an animation,
16-bit and float images rescaled (not clipped), transparency composited on
white, palette/CMYK/grayscale converted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

#: Modes that need more than ``Image.convert("RGB")`` to look right.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _rescale_wide(img: Image.Image) -> Image.Image:
    """16-bit or float image to 8-bit L, mapping its value range to 0..255."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = arr / top * 255.0
    elif img.mode == "F":
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB (see module docstring)."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        return _rescale_wide(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: Path | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` fully and return it as RGB, upright.

    Raises ``OSError``/``ValueError`` subclasses from Pillow for unreadable files
    (Pillow's own ``DecompressionBombError`` above twice its pixel limit), and
    :class:`ImageTooLarge` when width x height exceeds ``max_pixels``.
    """
    with Image.open(path) as img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise ImageTooLarge(img.width, img.height, max_pixels)
        img.seek(0)
        img.load()
        upright = ImageOps.exif_transpose(img)
        return to_rgb(upright if upright is not None else img)


class ImageTooLarge(ValueError):
    """The image has more pixels than allowed (a possible decompression bomb)."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(f"{width}x{height} = {width * height:,} pixels, over the limit {limit:,}")
        self.width, self.height, self.limit = width, height, limit


#: timm's interpolation names, as Pillow's resampling filters.
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def eval_pixels(img: Image.Image, config: dict) -> np.ndarray | None:
    """An RGB image as timm's evaluation transform prepares it without normalising:
    the shorter side resized to ``floor(size / crop_pct)`` (Pillow, as torchvision does
    for PIL images), the centre ``size`` x ``size`` cropped, (3, H, W) float32 in [0, 1].
    The same numbers as ``DataConfig.transform()`` with mean 0 and std 1, with Pillow and
    NumPy alone, so a predictor starts without PyTorch. ``None`` where ``config`` asks
    for what this does not reproduce (another crop mode, a non-square input, a crop
    larger than the image, an unknown filter): use the timm transform then.
    """
    _, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 0.875
    resample = _RESAMPLE.get(config.get("interpolation", "bilinear"))
    if (
        height != width
        or config.get("crop_mode", "center") not in (None, "center")
        or crop_pct > 1.0
        or resample is None
    ):
        return None
    scale = math.floor(height / crop_pct)  # as timm
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scale, int(scale * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), resample)
    top, left = round((new_h - height) / 2.0), round((new_w - width) / 2.0)
    img = img.crop((left, top, left + width, top + height))
    pixels = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return pixels.astype(np.float32) / np.float32(255.0)
