"""Decoding every candidate once: digest, size, mode, or the reason it is unusable."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from transferpilot.images import ImageTooLarge, open_rgb
from transferpilot.intake._types import Candidate, Finding, ImageInfo
from transferpilot.progress import track

log = logging.getLogger(__name__)

#: Modes that are converted to RGB on loading (reported, kept).
CONVERTED_MODES = {
    "1",
    "L",
    "LA",
    "P",
    "PA",
    "RGBA",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "I;16N",
    "F",
}


def inspect_file(path: Path, max_pixels: int) -> ImageInfo | tuple[str, str]:
    """Decode ``path`` fully, as training will. Returns its info or ``(kind, reason)``."""
    try:
        size = path.stat().st_size
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink_loop", "symbolic link loops"
        return "unreadable", f"cannot stat: {err.strerror or err}"
    if not path.is_file():
        return "not_a_file", "not a regular file"
    if size == 0:
        return "empty", "0-byte file"
    try:
        data = path.read_bytes()
    except OSError as err:
        return "unreadable", f"cannot read: {err.strerror or err}"
    try:
        with Image.open(io.BytesIO(data)) as img:
            header = (img.format or "?", img.mode, int(getattr(img, "n_frames", 1)))
        rgb = open_rgb(io.BytesIO(data), max_pixels=max_pixels)
    except UnidentifiedImageError:
        return "not_image", "not an image Pillow can read"
    except (ImageTooLarge, Image.DecompressionBombError) as err:
        return "too_large", f"too many pixels: {err}"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as err:
        return "corrupt", f"corrupt or truncated ({type(err).__name__}: {err})"
    fmt, mode, frames = header
    return ImageInfo(hashlib.sha256(data).hexdigest(), rgb.width, rgb.height, mode, fmt, frames)


def inspect_all(
    candidates: Sequence[Candidate], *, max_pixels: int, workers: int
) -> list[ImageInfo | tuple[str, str]]:
    """:func:`inspect_file` over all candidates in threads (Pillow decodes without the GIL)."""
    threads = max(1, workers) if workers >= 0 else os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(lambda c: inspect_file(c.path, max_pixels), candidates)
        return list(
            track(results, total=len(candidates), description="checking images", logger=log)
        )


def notes_for(candidate: Candidate, info: ImageInfo) -> list[Finding]:
    """What is worth telling about a usable image: conversions, animations."""
    notes = []
    if info.mode in CONVERTED_MODES:
        notes.append(
            Finding(candidate.shown, "converted", f"{info.mode} image", "converted to RGB")
        )
    if info.frames > 1:
        notes.append(
            Finding(candidate.shown, "animated", f"{info.frames} frames", "first frame used")
        )
    return notes
